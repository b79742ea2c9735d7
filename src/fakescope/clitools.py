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


# --- configuration: CLI > FAKESCOPE_<COMMAND>_<OPTION> > config file > default -------------------
CONFIG_COMMANDS = ("scan", "serve")  # the commands that read the environment and the config file
ENV_PREFIX = "FAKESCOPE"


def env_settings(command: str) -> dict:
    """context_settings that make click read every option of `command` from FAKESCOPE_<COMMAND>_<OPTION>
    (e.g. FAKESCOPE_SCAN_THRESHOLD, FAKESCOPE_SERVE_PORT) when it is not on the command line."""
    return {"auto_envvar_prefix": f"{ENV_PREFIX}_{command.upper()}"}


def read_config(path, group, ctx) -> dict:
    """A TOML config file as click's default_map: one table per command ([scan], [serve]) whose keys
    are option names (`max-pixels` or `max_pixels`). click consults it after the command line and the
    environment, before the defaults. A typo is an error, not a silently ignored setting."""
    from pathlib import Path

    from .errors import InputError
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise InputError(f"config {path}: cannot read ({e.strerror or e})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"config {path}: not valid TOML ({e})") from None
    default_map = {}
    for section, values in data.items():
        if section not in CONFIG_COMMANDS or not isinstance(values, dict):
            raise InputError(f"config {path}: unknown table [{section}] (tables: {', '.join(CONFIG_COMMANDS)})")
        command = group.get_command(ctx, section)
        names = {opt[2:].replace("-", "_"): p.name for p in command.params if getattr(p, "opts", None)
                 for opt in p.opts if opt.startswith("--")}
        unknown = [k for k in values if k.replace("-", "_") not in names]
        if unknown:
            raise InputError(f"config {path}: [{section}] has no option {unknown[0]!r}")
        default_map[section] = {names[k.replace("-", "_")]: v for k, v in values.items()}
    return default_map
