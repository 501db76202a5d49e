"""rlserve.training: an RLlib-style training library on Ray (torch + gymnasium).

The public API follows RLlib's "Getting Started" guide: build an algorithm from a fluent
config, call ``train()``, ``save()`` and ``Algorithm.from_checkpoint()``.
"""

__all__: list[str] = []
