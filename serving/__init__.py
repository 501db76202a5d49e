"""rlserve.serving: Ray Serve deployments answering batched ``compute_action`` over HTTP.

A serving replica needs only the exported artifact: this package never imports ``training``.
"""

__all__: list[str] = []
