"""The `fakescope` command line (Typer): one module per command group (scan.py, train.py,
evaluate.py, models.py, edits.py; shared pieces in common.py), registered here in the order `--help` lists
them, with the groups defined beside their packages (`<package>/commands.py`). Options and
rendering only: each command calls the library."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

from ..clitools import env_settings, read_config
from . import edits, evaluate, models, scan, train
from .common import (DEFAULT_HELP, EXIT_ALL_FAILED, EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, MODEL_HELP,  # noqa: F401
                     Calibration, Method, Modality, ScanFormat, configure_logging, err, log, one_line, parse_options)

class _Commands(TyperGroup):
    """Every command: an error the user can fix (errors.InputError: a bad input, model folder or
    output path; an OSError such as a full disk or a read-only folder) is one line and exit 2,
    never a traceback. Anything else is a bug and keeps its traceback."""

    def invoke(self, ctx):
        from ..errors import InputError
        try:
            return super().invoke(ctx)
        except InputError as e:
            err.print(f"[red]error:[/red] {one_line(e)}", soft_wrap=True)
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            err.print(f"[red]error:[/red] {one_line(where + (e.strerror or str(e)))}", soft_wrap=True)
        except Exception as e:
            # an ImageError means images.py is loaded; importing it here would load Pillow and numpy
            # on every --help (Typer ends a help with an exception too)
            images = sys.modules.get("fakescope.images")
            if images is None or not isinstance(e, images.ImageError):  # one image that stops a whole command
                raise
            err.print(f"[red]error:[/red] {one_line(e)}", soft_wrap=True)
        raise typer.Exit(EXIT_USAGE)


app = typer.Typer(cls=_Commands, add_completion=True, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Detect AI-generated images.\n\n" + DEFAULT_HELP)


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__
        print(f"fakescope {__version__}")
        raise typer.Exit()


@app.callback()
def _root(ctx: typer.Context,
          version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                       help="Print the version and exit."),
          config: Optional[Path] = typer.Option(None, "--config", envvar="FAKESCOPE_CONFIG", show_default=False,
                                                help="TOML file with [scan] and [serve] tables of option values. "
                                                     "Precedence: command line > FAKESCOPE_<COMMAND>_<OPTION> "
                                                     "environment variables > this file > defaults."),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors on stderr; no progress bars."),
          verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="Also debug messages (where models come from, ...).")):
    configure_logging(quiet, verbose)
    if config is not None:  # read before the command's own context is made, which looks it up
        ctx.default_map = {**(ctx.default_map or {}), **read_config(config, ctx.command, ctx)}


app.command(epilog="Exit status: 0 all images scored; 3 some failed; 4 none could be scored; 2 usage error. "
                     "Every option can also come from FAKESCOPE_SCAN_<OPTION> or the [scan] table of --config.",
             context_settings=env_settings("scan"))(scan.scan)
app.command()(train.train)
app.command()(evaluate.compare)
app.command("leave-out")(evaluate.leave_out)
app.command()(evaluate.validate)
app.command("eval")(evaluate.evaluate)
app.command()(evaluate.calibrate)
app.command()(models.backbones)
app.command()(models.card)
app.command()(models.push)

from ..localize import commands as _loc  # noqa: E402

app.add_typer(_loc.app, name="localizer")
app.command("make-edits")(edits.make_edits)
app.command("train-autoencoder")(edits.train_autoencoder)

# --- commands from other modules: one registration line each, in its own slot ---
from ..service.commands import serve as _serve  # noqa: E402
app.command("serve", context_settings=env_settings("serve"),
            epilog="Every option can also come from FAKESCOPE_SERVE_<OPTION> or the [serve] table of --config.")(_serve)
from ..scale.commands import features as _features  # noqa: E402
app.command("features")(_features)
from ..generate.commands import app as _build  # noqa: E402
app.add_typer(_build, name="build")
