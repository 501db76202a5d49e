"""Spaces shared by the formats tests."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces


def nested_dict_space() -> spaces.Dict:
    """A Dict with a nested Tuple and Dict: leaves mode, position, sensors.0, sensors.1.a/z."""
    return spaces.Dict(
        {
            "position": spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32),
            "sensors": spaces.Tuple(
                (
                    spaces.Box(0, 255, shape=(4, 4, 3), dtype=np.uint8),
                    spaces.Dict({"z": spaces.Discrete(3), "a": spaces.MultiBinary(2)}),
                )
            ),
            "mode": spaces.Discrete(4, start=-2),
        }
    )
