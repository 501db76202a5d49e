"""Allow ``python -m rlserve``."""

from rlserve.cli import app

app(prog_name="rlserve")
