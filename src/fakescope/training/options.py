"""Method options given as KEY=VALUE text (`fakescope train --set`, `fakescope leave-out --set`),
and a recipe's options as a typed dataclass (`typed_options`)."""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Iterable, TypeVar

T = TypeVar("T")
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def parse_options(pairs: Iterable[str]) -> dict:
    """KEY=VALUE strings -> dict; values read as JSON when they parse (0.9, true, [1,2]), else as text."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE, got {pair!r}")
        try:
            out[key.strip()] = json.loads(value.lower() if value.lower() in ("true", "false") else value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def typed_options(cls: type[T], given: dict, what: str) -> T:
    """`given` (parsed --set values: numbers, booleans, lists or text) as the dataclass `cls`, each
    value converted to its field's type; an unknown key or a value of the wrong kind is a
    ValueError that names `what` (e.g. "--method lowlevel") and the known keys."""
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(given) - fields)
    if unknown:
        raise ValueError(f"{what}: unknown option(s) {unknown}; known: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    return cls(**{k: convert(v, hints[k], f"{what}: option {k}") for k, v in given.items()})


def convert(value, kind, name: str):
    """`value` as type `kind`: bool (also from true/false/1/0/yes/no/on/off text), int, float, str,
    tuple[X, ...], X | None, or str | float (a number where the text reads as one)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        choices = [a for a in args if a is not type(None)]
        if len(choices) == 1:
            return convert(value, choices[0], name)
        if float in choices:  # e.g. C: "auto", "sweep" or a number
            try:
                return float(value)
            except (TypeError, ValueError):
                pass
        return str(value)
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            raise ValueError(f"{name} must be a list, e.g. [0.4, 1.0], got {value!r}")
        return tuple(convert(v, args[0], name) for v in value)
    if kind is bool:
        text = str(value).strip().lower()
        if isinstance(value, bool) or text in TRUE + FALSE:
            return value if isinstance(value, bool) else text in TRUE
        raise ValueError(f"{name} must be true or false, got {value!r}")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {kind.__name__}, got {value!r}") from None
