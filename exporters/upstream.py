"""Named filters for warnings that torch emits about itself while we export or load.

* TorchScript is deprecated upstream (torch 2.13): ``torch.jit.trace``, ``trace_method``,
  ``save`` and ``load`` each warn. rlserve keeps the legacy format working, marked legacy in
  the manifest.
* ``torch.export`` (and the ONNX exporter built on it) trips torch's own deprecation of
  ``isinstance(treespec, LeafSpec)`` internally.
* The ONNX exporter notes that inputs sharing the batch dimension share its name.

Only these messages are silenced, only inside :func:`upstream_warnings_silenced`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

__all__ = ["upstream_warnings_silenced"]

_FILTERS = (
    (DeprecationWarning, r"`torch\.jit\.(trace|trace_method|save|load|script)` is deprecated"),
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
    # Every input shares one batch Dim; the ONNX exporter notes that it names the axis once.
    (UserWarning, r"# The axis name: batch will not be used"),
)


@contextlib.contextmanager
def upstream_warnings_silenced() -> Iterator[None]:
    """Silence torch's warnings about its own deprecations (and nothing else)."""
    with warnings.catch_warnings():
        for category, message in _FILTERS:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield
