"""Errors the user can fix: a bad input, model folder or output path, or a wrong option.

They derive from ValueError, so code that already catches ValueError keeps working. The CLI
turns each into one line on stderr and exit status 2 (cli/__init__.py); the service into a 4xx.
Everything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class InputError(ValueError):
    """A bad input or usage: one clear line for the user, never a traceback."""


class ModelFolderError(InputError):
    """A model folder that is not a loadable fakescope model (missing, broken or hostile)."""


class MissingModelError(ModelFolderError, FileNotFoundError):
    """No model where one was named (also a FileNotFoundError, as before)."""


class OutputError(InputError):
    """An output path fakescope must not or cannot write (not a results file, locked, read-only, full)."""


__all__ = ["InputError", "MissingModelError", "ModelFolderError", "OutputError"]
