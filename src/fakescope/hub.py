"""Model folders on the Hugging Face Hub: resolve `user/repo[@revision]` to a downloaded folder,
push a folder, and write the model card (README.md) every saved model folder carries.

A model reference (`--model`, `load_detector`, `load_localizer`) is read by one rule:

1. an existing path (folder) is a local model, whatever it looks like;
2. otherwise `hf://user/repo[@rev]`, or a bare `user/repo[@rev]` (exactly one `/`, Hub-legal
   characters, not starting with `.`, `/` or `~`) is a Hub id;
3. anything else is a missing folder.

A Hub snapshot is fetched with only `*.json`, `*.safetensors` and `README.md` allowed, into the
standard Hugging Face cache (HF_HOME / HF_HUB_CACHE; HF_HUB_OFFLINE=1 reads the cache alone), and
then loaded by the same loader, with the same checks, as a local folder: nothing else in the
snapshot is ever read. `huggingface_hub` is imported only when a Hub id is used.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .errors import InputError, MissingModelError
from .files import atomic_write

HUB_PREFIX = "hf://"
# what a model folder may hold; nothing else is downloaded or uploaded
MODEL_FILES = ["*.json", "*.safetensors", "README.md"]
_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*)(?:@(?P<rev>[A-Za-z0-9_./-]+))?$")
CARD_NAME = "README.md"


def parse_hub_id(ref: str | os.PathLike) -> tuple[str, str | None] | None:
    """(repo_id, revision) when `ref` names a Hub model by the rule above, else None."""
    text = str(ref)
    explicit = text.startswith(HUB_PREFIX)
    if explicit:
        text = text[len(HUB_PREFIX):]
    elif Path(text).exists():  # an existing folder wins over a look-alike hub id
        return None
    m = _HUB_ID.match(text)
    if m is None or ".." in m.group("repo") or ".." in (m.group("rev") or ""):
        if explicit:
            raise InputError(f"{ref!s}: not a Hub id (expected hf://user/repo[@revision])")
        return None
    return m.group("repo"), m.group("rev")


def resolve_model(ref: str | os.PathLike) -> Path:
    """A local folder for `ref`: the path itself, or the Hub snapshot downloaded into the cache."""
    hub = parse_hub_id(ref)
    if hub is None:
        return Path(ref)
    return download_model(*hub)


def download_model(repo_id: str, revision: str | None = None) -> Path:
    """The snapshot folder of `repo_id` at `revision` (default: main) in the Hugging Face cache,
    holding only the files a model folder may contain."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, \
            RevisionNotFoundError
    except ImportError:
        raise InputError(f"{repo_id}: loading a model from the Hub needs huggingface_hub "
                         "(pip install huggingface_hub)") from None
    try:
        folder = snapshot_download(repo_id, revision=revision, repo_type="model", allow_patterns=MODEL_FILES,
                                   library_name="fakescope")
    except (LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError) as e:
        raise MissingModelError(f"{repo_id}{'@' + revision if revision else ''}: no such local folder, and not "
                                f"available from the Hub or its cache ({type(e).__name__})") from None
    except (HfHubHTTPError, OSError) as e:
        raise MissingModelError(f"{repo_id}: download failed ({str(e).splitlines()[0][:160]})") from None
    return Path(folder)


def push_model(folder: str | os.PathLike, repo_id: str, *, revision: str | None = None, private: bool = False,
               token: str | None = None, message: str | None = None) -> str:
    """Upload a detector or localiser folder (its JSON, safetensors and model card only) to
    `repo_id`; the card is written first when the folder has none. Returns the commit URL."""
    from huggingface_hub import HfApi

    d = Path(folder)
    kind = model_kind(d)
    if kind is None:
        raise MissingModelError(f"{d}: not a model folder (no detector.json or localizer.json)")
    m = _HUB_ID.match(repo_id)
    if m is None or m.group("rev") or ".." in repo_id:
        raise InputError(f"{repo_id}: not a Hub repo id (expected user/repo)")
    if not (d / CARD_NAME).exists():
        write_model_card(d)
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=str(d), repo_type="model", revision=revision,
                             allow_patterns=MODEL_FILES, commit_message=message or f"Upload fakescope {kind}")
    return str(getattr(info, "commit_url", info))


def model_kind(folder: Path) -> str | None:
    for kind in ("detector", "localizer"):
        if (folder / f"{kind}.json").is_file():
            return kind
    return None


# ---------------------------------------------------------------- the model card
DEFAULT_USE = ("Screening images for signs of AI generation, as one piece of evidence among others. "
               "A score is evidence, not proof: do not act on one image's score alone.")
DEFAULT_WEAKNESSES = [
    "generators it never saw in training may pass as real;",
    "heavy re-compression, resizing or editing changes the score;",
    "local edits (inpainting) of real photos are mostly missed at image level.",
]


def write_model_card(folder: str | os.PathLike, meta: dict | None = None) -> Path:
    """Write `README.md` (the Hub's model card) from the folder's metadata JSON."""
    d = Path(folder)
    if meta is None:
        kind = model_kind(d)
        if kind is None:
            raise MissingModelError(f"{d}: not a model folder (no detector.json or localizer.json)")
        meta = json.loads((d / f"{kind}.json").read_text())
    path = d / CARD_NAME
    atomic_write(path, model_card(meta).encode())
    return path


def _num(x) -> str:
    return f"{x:.3f}" if isinstance(x, (int, float)) and not isinstance(x, bool) else "-"


def _yaml_str(s: str) -> str:
    return json.dumps(str(s))  # a JSON string is a valid YAML scalar, whatever it holds


def _source_validation(sv: dict | None) -> list[str]:
    """The card's lines for `fakescope validate`'s results (record_validation), if recorded."""
    if not isinstance(sv, dict) or not sv.get("held_out_sources"):
        return []
    recipe = sv.get("recipe") or {}
    out = ["On sources held out of training (`fakescope validate`: each source left out in turn, the "
           "threshold set on the other sources' reals; recipe: " +
           ", ".join(f"{k} `{json.dumps(v) if isinstance(v, dict) else v}`" for k, v in recipe.items()
                     if v not in (None, {}, [])) + "). These predict "
           "new data better than the held-out split above:", "",
           "| held out | n real | n fake | AUC | acc. real | acc. fake | answered with \"uncertain\" on | accuracy on those |",
           "|---|---|---|---|---|---|---|---|"]
    out += [f"| {name} | {r.get('n_real', '-')} | {r.get('n_fake', '-')} | {_num(r.get('auc'))} | {_num(r.get('acc_real'))} | "
            f"{_num(r.get('acc_fake'))} | {_num(r.get('coverage'))} | {_num(r.get('answered_accuracy'))} |"
            for name, r in sv["held_out_sources"].items() if isinstance(r, dict)]
    cam = sv.get("camera_photos") or {}
    if cam.get("n"):
        out += ["", f"Camera photos from devices never trained on ({cam['n']} photos, {cam.get('devices', '?')} devices): "
                    f"{_num(cam.get('fpr'))} called fake at the threshold" +
                (f"; with \"uncertain\" on, {_num(cam.get('coverage'))} answered and {_num(cam.get('answered_fpr'))} "
                 "of those called fake." if cam.get("coverage") is not None else ".")]
    return out + [""]


def model_card(meta: dict) -> str:
    """The card's text: the Hub's YAML header (license, tags, pipeline_tag, metrics, model-index)
    and what the metadata knows. Missing fields are said to be unknown, never invented."""
    localizer = "decoder" in meta and "method" not in meta
    md = meta.get("metadata") or {}
    name = str(meta.get("id") or ("fakescope-localizer" if localizer else "fakescope-detector"))
    backbone = meta.get("backbone") or {}
    bb = str(backbone.get("name") or backbone.get("kind") or "unknown")
    method = "DeCLIP-style decoder over patch features" if localizer else str(meta.get("method", "unknown"))
    vm = md.get("validation_metrics") or {}
    metrics = [(k, vm[k]) for k in ("auc", "ap", "accuracy", "pixel_auc", "iou", "f1") if isinstance(vm.get(k), (int, float))]
    tags = ["fakescope", "ai-image-detection", "deepfake-detection", "safetensors"]
    tags.append("image-manipulation-localization" if localizer else "image-classification")
    head = ["---", "license: mit", "library_name: fakescope", "pipeline_tag: image-classification", "tags:"]
    head += [f"- {t}" for t in tags]
    if metrics:
        head.append("metrics:")
        head += [f"- {'roc_auc' if k == 'auc' else k}" for k, _ in metrics]
        head += ["model-index:", f"- name: {_yaml_str(name)}", "  results:", "  - task:",
                 "      type: image-classification", "    dataset:", "      name: held-out validation split",
                 "      type: custom", "    metrics:"]
        for k, v in metrics:
            head += [f"    - type: {'roc_auc' if k == 'auc' else k}", f"      value: {float(v):.4f}"]
    head.append("---")

    data = md.get("data") or []
    rule = md.get("threshold_rule") or (md.get("threshold_calibration") and json.dumps(md["threshold_calibration"]))
    body = [
        f"# {name}", "",
        f"A fakescope {'localiser (where was this image edited?)' if localizer else 'detector (was this image made by a generative model?)'}. "
        "The folder is data only: JSON metadata and safetensors arrays, no code and no pickle.", "",
        "## Use", "", "```bash", "pip install fakescope",
        f"fakescope scan photos/ --{'localize --localizer' if localizer else 'model'} <this repo id> --out results.jsonl",
        "```", "",
        "## Model", "",
        f"- backbone: `{bb}` (frozen features{', input ' + str(backbone.get('input_size')) + ' px' if backbone.get('input_size') else ''})",
        f"- method: `{method}`",
        f"- threshold: {_num(meta.get('threshold'))}" + (f" ({rule})" if rule else ""),
        f"- version: {meta.get('version', '-')}; trained {md.get('trained', 'unknown')} with fakescope {md.get('fakescope_version', 'unknown')}",
        "", "## Training data", "",
    ]
    body += [f"- `{s}`" for s in data] or ["- not recorded in the metadata"]
    gens = (md.get("train") or {}).get("generators")
    if gens:
        body += ["", "Fake images per generator: " + ", ".join(f"{g} {n}" for g, n in gens.items()) + "."]
    body += ["", "## Validation", ""]
    if vm:
        body += [f"On the held-out split ({vm.get('n', '?')} images): " +
                 ", ".join(f"{k} {_num(v)}" for k, v in metrics) + ".", ""]
    per = md.get("validation_by_source") or {}
    per_gen = vm.get("per_generator") or {}
    for title, table in (("per source", per), ("per generator (all held-out reals vs that generator)", per_gen)):
        if table:
            body += [f"Validation {title}:", "", "| subset | n | AUC | AP | accuracy |", "|---|---|---|---|---|"]
            body += [f"| {k} | {v.get('n', '-')} | {_num(v.get('auc'))} | {_num(v.get('ap'))} | {_num(v.get('accuracy'))} |"
                     for k, v in table.items() if isinstance(v, dict)]
            body.append("")
    if not (vm or per):
        body += ["No validation metrics recorded in the metadata.", ""]
    body += _source_validation(md.get("source_validation"))
    body += ["## Intended use", "", str(md.get("intended_use") or DEFAULT_USE), "",
             "## Known weaknesses", ""]
    weak = md.get("known_weaknesses") or DEFAULT_WEAKNESSES
    body += [f"- {w}" for w in (weak if isinstance(weak, list) else [weak])]
    body += ["", "This card was generated by fakescope from the folder's metadata."]
    return "\n".join(head + [""] + body) + "\n"
