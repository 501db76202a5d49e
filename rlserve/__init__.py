"""rlserve: train RL policies on Ray, export verified artifacts, serve them over HTTP.

The distribution ships five packages, one layer each, imports pointing down only:
``formats`` (spaces as JSON, verified directories, the error root) <- ``training`` <-
``exporters`` <- ``serving`` <- ``rlserve``, the application on top: the command-line app
(``rlserve.cli``), one module per command (``rlserve.commands``) and the jobs behind them
(``rlserve.jobs``).
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("rlserve")
except (
    _metadata.PackageNotFoundError
):  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
