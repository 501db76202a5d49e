"""How a config tells what is wrong: :class:`ConfigError` and pydantic errors in plain words.

:class:`training.config.AlgorithmConfig` validates every fluent call against a pydantic
section (:mod:`training.config_sections`); this module turns the validation errors into one
message that names the field, what was given and what is allowed, and recognises the Ray Tune
search spaces that are validated only once Tune resolves them.
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ValidationError

from formats.errors import RlserveError

__all__ = ["ConfigError", "describe_validation_error", "is_search_space"]


class ConfigError(RlserveError, ValueError):
    """A config value is unknown, of the wrong type, or out of range."""


def is_search_space(value: Any) -> bool:
    """Whether ``value`` is a Ray Tune search space that Tune resolves before ``setup``."""
    from ray.tune.search.sample import Domain

    if isinstance(value, Domain):
        return True
    return isinstance(value, dict) and set(value) == {"grid_search"}


def _nested_model(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel]:
    """The (nested) model that owns the last element of an error location."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    return model


def _describe(error: Any, model: type[BaseModel]) -> str:
    loc = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        field = str(error["loc"][-1])
        owner = _nested_model(model, tuple(error["loc"]))
        allowed = sorted(owner.model_fields)
        prefix = loc.rpartition(".")[0]
        field = f"{prefix}.{field}" if prefix else field
        close = difflib.get_close_matches(str(error["loc"][-1]), allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown key {field!r}{hint}; allowed keys: {', '.join(allowed)}"
    message = str(error["msg"]).removeprefix("Value error, ")
    if not loc:
        return message
    return f"{loc}: {message} (got {error['input']!r})"


def describe_validation_error(err: ValidationError, model: type[BaseModel]) -> str:
    """Every error of a section's validation, each naming its field, joined by ``"; "``."""
    return "; ".join(_describe(e, model) for e in err.errors())
