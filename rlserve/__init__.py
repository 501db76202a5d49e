"""rlserve: train RL policies on Ray, export verified artifacts, serve them over HTTP.

The distribution ships four packages. ``training``, ``exporters`` and ``serving`` are the
libraries (imports go one way: training <- exporters <- serving); ``rlserve`` holds only the
command-line application that composes them.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rlserve")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
