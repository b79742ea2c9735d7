"""Small pieces the `fakescope` command and the `<package>/commands.py` groups share (cli layer).
Nothing heavy is imported here: every `--help` loads this module."""
from __future__ import annotations

from enum import Enum


def choice(name: str, values) -> type[Enum]:
    """A str Enum for Typer: the values are listed in --help and anything else is a usage error (exit 2)."""
    return Enum(name, {v: v for v in values}, type=str)


def value(x):
    """An Enum option's plain string (library code and JSON metadata get 'local', not Engine.local)."""
    return x.value if isinstance(x, Enum) else x


Engine = choice("Engine", ["local", "ray"])
ImageFormat = choice("ImageFormat", ["png", "jpeg", "jpg", "webp"])
