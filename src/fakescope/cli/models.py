"""`fakescope backbones`, `card` and `push`: what backbones there are, a model folder's card, and the folder to the Hub."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import log, one_line


def backbones():
    """List the backbone spec names and prefixes this installation knows."""
    from ..backbones import available, parse_spec

    for name in available():
        if name.endswith(":"):
            print(f"{name}<hub id or local dir>")
        else:
            s = parse_spec(name)
            print(f"{name:16s} dim={s.dim:<5d} input={s.input_size} weights={s.weights}")


def card(
    model_dir: Path = typer.Argument(..., help="A detector or localiser folder."),
    validation: Optional[Path] = typer.Option(None, "--validation", help="A `fakescope validate --report` JSON of the "
                                              "recipe this detector was trained by: kept in its metadata and shown "
                                              "on its card (each held-out source, the camera-photo rate)."),
):
    """Rewrite a model folder's card (README.md) from its metadata, first recording a validation
    report in it when given."""
    import json

    from ..errors import InputError
    from ..hub import write_model_card
    from ..saving import record_validation

    if validation is None:
        path = write_model_card(model_dir)
    else:
        try:
            report = json.loads(validation.read_text())
        except ValueError as e:
            raise InputError(f"--validation {validation}: not JSON ({e})") from None
        path = record_validation(model_dir, report)  # checks that it is a validate report
    log.info(f"wrote {one_line(path)}")


def push(
    model_dir: Path = typer.Argument(..., help="A detector or localiser folder (detector.json / localizer.json + safetensors)."),
    repo_id: str = typer.Argument(..., help="Hugging Face Hub repo id, user/repo (created when missing)."),
    private: bool = typer.Option(False, "--private", help="Create the repo as private."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Branch to upload to (default: main)."),
    token: Optional[str] = typer.Option(None, "--token", envvar="HF_TOKEN", show_default=False,
                                        help="Hub token; default: HF_TOKEN or the `hf auth login` token."),
):
    """Upload a model folder to the Hugging Face Hub with its model card (README.md); then
    `--model user/repo` loads it anywhere."""
    from ..hub import push_model

    url = push_model(model_dir, repo_id, revision=revision, private=private, token=token)
    log.info(f"pushed {one_line(model_dir)} to {one_line(repo_id)}: {one_line(url)}")
