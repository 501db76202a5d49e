"""One subpackage per algorithm; shared machinery lives beside them in ``training``."""
