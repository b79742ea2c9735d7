"""Detector = backbone spec + head + threshold + metadata; saved as safetensors + JSON.

    MODEL_DIR/detector.json      format, id, version, backbone spec, method + head config,
                                 threshold, training data, validation metrics
    MODEL_DIR/head.safetensors   the head's arrays

A detector may also read a caption per image (`text_encoder` + `modality` "text" or
"both", as in the COCOFake probes); it then needs `Sample.text` for every image.

`predict_batch` is the one batch function every entry point calls (the Python API, CLI scan
and features on either engine, the service): prepared items in, one Result per item out.
"""
from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from .backbones import Backbone, BackboneSpec, load_backbone, preferred_batch_size
from .backbones.spec import model_backbone_spec
from .data.samples import Sample
from .features import feature_vector, head_input
from .heads import Head, head_from_state
from .images import DEFAULT_LIMITS, ImageLimits
from .pipeline import (Item, batched, default_workers, iter_items, map_ahead, prepare, prepare_part, run_isolating,
                       stack)
from .errors import ModelFolderError
from .saving import check_model_ref, finite_number, load_model_dir, save_model_dir
from .uncertainty import EXPERTS_DISAGREE, REFEREE_VETO, UNFAMILIAR, UncertaintyRule

FORMAT = "fakescope.detector/1"
UNCERTAINTY_PREFIX = "uncertainty."
DEFAULT_MODEL = "default"


@dataclass
class Result:
    path: str
    sha256: str | None
    score: float | None          # probability that the image is AI-generated, 0..1
    label: str | None            # "fake" if score >= threshold, "uncertain" (see reason) or "real"; None on error
    threshold: float
    model: str                   # detector id
    model_version: str
    error: str | None = None
    reason: str | None = None    # why the verdict is "uncertain" (uncertainty.py), a referee's "real", or "provenance: ..."
    provenance: dict | None = None  # provenance.read_provenance of the file (None: mode "off", or pixels without a file)
    experts: dict | None = None  # a fused detector's experts' P(fake), None where one abstains (heads/fusion.py)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Detector:
    spec: BackboneSpec
    head: Head
    threshold: float = 0.5
    id: str = "custom"
    version: str = "0"
    metadata: dict[str, Any] = field(default_factory=dict)
    batch_size: int | None = None   # images per forward; None: the backbone's preferred size
    text_encoder: str | None = None # caption encoder spec ("minilm", "hf-clip-text:..."), if the head reads text
    modality: str = "image"         # "image", "text" or "both": what the head reads
    calibration: dict | None = None # {"kind": "platt", "a", "b"} or {"kind": "temperature", "t"}: maps head scores to calibrated P(fake)
    uncertainty: UncertaintyRule | None = None  # when to answer "uncertain" instead of real/fake
    abstain: bool = True            # False: always answer real/fake, even where the rule says uncertain
    every_expert: bool = False      # a fused detector: True runs every expert on every image (each one's score
                                    # in every line); False only where it can change the verdict (same verdicts)
    _backbone: Backbone | None = field(default=None, repr=False)
    _text: Any = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return f"{self.id}@{self.version}"

    @property
    def backbone(self) -> Backbone:
        if self._backbone is None:
            self._backbone = load_backbone(self.spec)
        return self._backbone

    @property
    def fused(self) -> bool:
        """A detector of several experts over a fused input (heads/fusion.py, backbones/fusion.py)."""
        return self.spec.kind == "fusion" and self.head.method == "fusion" and self.modality == "image"

    @property
    def deferred_parts(self) -> tuple[int, ...]:
        """Parts of a fused input a scan reads only for the images that need them: the referees
        that object only to "fake" (none when `every_expert`). `prepare_item` leaves them unread."""
        if self.every_expert or not self.fused:
            return ()
        return tuple(i for i, e in enumerate(self.head.experts) if i > 0 and self.head.objects_to_fake_only(e))

    def prepare_item(self, sample: Sample, limits: ImageLimits = DEFAULT_LIMITS) -> Item:
        """One image decoded and preprocessed for this detector (`pipeline.prepare`, view 0)."""
        return prepare(sample, self.spec, (0,), limits, defer=self.deferred_parts)[0]

    @property
    def needs_text(self) -> bool:
        return self.modality != "image"

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        if self._text is None:
            from .backbones.text import load_text_encoder
            self._text = load_text_encoder(self.text_encoder)
        return self._text.encode(list(texts))

    # ------------------------------------------------------------ inference
    def scores(self, arrays: np.ndarray | None, texts: Sequence[str] | None = None) -> np.ndarray:
        return self.scores_and_features(arrays, texts)[0]

    def scores_and_features(self, arrays: np.ndarray | None, texts: Sequence[str] | None = None,
                            items: Sequence[Item] | None = None
                            ) -> tuple[np.ndarray, np.ndarray | None, dict[str, np.ndarray] | None]:
        """P(fake) per image, the image features the head read (None for a text-only head) and, for a
        head of several experts, each expert's P(fake) (else None). `items`: the prepared items
        `arrays` was stacked from, for parts they deferred (`prepare_item`)."""
        if self.fused and not self.every_expert:
            return self._fused_scores(arrays, items)
        image = feature_vector(self.backbone.forward(arrays), self.spec) if self.modality != "text" else None
        text = self.encode_text(texts) if self.needs_text else None
        scores, experts = self.head.predict_with_experts(head_input(image, text, self.modality))
        return self.calibrated(scores), image, experts

    def _fused_scores(self, arrays: np.ndarray, items: Sequence[Item] | None = None
                      ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """`scores_and_features` of a fused detector, each expert run only where it can change the
        verdict: on the images in its domain, and a referee that objects only to "fake" on the images
        the voters call fake. The scores and verdicts are those of every expert run on every image
        (the skipped columns are zeros the stacker and `disagreements` never read); an expert not
        run on an image has no score there (None in its line). The first expert always runs: the
        "unfamiliar" rule reads its features. A referee costs most on full-size photos (results.md 11.13):
        an item that deferred it (`prepare_item`) has it decoded and read only here, when needed."""
        bb, head = self.backbone, self.head
        speaks = head.applies_to_sizes(bb.sizes(arrays)) > 0
        asked_later = [head.objects_to_fake_only(e) for e in head.experts]
        ran = speaks & ~np.array(asked_later)
        ran[:, 0] = True
        image = bb.forward(arrays, rows=[*ran.T, None]).pooled  # the last part is the image size
        scores, experts = head.predict_with_experts(image)
        scores = self.calibrated(scores)
        starts, asked = np.cumsum([0, *(int(e["dim"]) for e in head.experts)]), False
        for i in np.flatnonzero(asked_later):
            need = np.flatnonzero(speaks[:, i] & (scores >= self.threshold))  # the comparison `disagreements` makes
            def read(r: int, i: int = i) -> np.ndarray | None:
                if items is not None and i in items[r].deferred:
                    return prepare_part(items[r], self.spec, i)
                return bb.part_input(arrays[r:r + 1], i)[0]
            inputs = list(map_ahead(read, need, workers=min(len(need), default_workers())))  # decodes in threads
            done = [r for r, x in zip(need, inputs) if x is not None]  # (None: the file is gone or changed)
            if done:
                image[np.ix_(done, np.arange(starts[i], starts[i + 1]))] = \
                    bb.run_part(i, np.stack([x for x in inputs if x is not None]))
                ran[done, i], asked = True, True
        if asked:  # the referees' scores on the rows they now read (the fused score does not read them)
            experts = head.predict_with_experts(image)[1]
        return scores, image, {name: np.where(ran[:, i], v, np.nan) for i, (name, v) in enumerate(experts.items())}

    def verdicts(self, scores: np.ndarray, features: np.ndarray | None) -> list[tuple[str, str | None]]:
        """(label, reason) per score: fake at or above the threshold, else real, unless the
        uncertainty rule (when present and `abstain`) gives a reason to say "uncertain"."""
        reasons: list[str | None] = [None] * len(scores)
        if self.abstain and self.uncertainty is not None and features is not None:
            reasons = self.uncertainty.reasons(self.head.uncertainty_input(features), scores, self.threshold)
        vetoed = np.zeros(len(scores), bool)
        if self.abstain and features is not None:
            # after "unfamiliar", before "near threshold": a referee that objects says more than the band
            reasons = [EXPERTS_DISAGREE if d and r != UNFAMILIAR else r
                       for r, d in zip(reasons, self.head.disagreements(features, scores, self.threshold))]
            # a referee's veto answers where it would only have objected ("unfamiliar" still wins)
            vetoed = self.head.vetoes(features, scores, self.threshold) & \
                np.array([r != UNFAMILIAR for r in reasons], bool)
        return [("real", REFEREE_VETO) if v else ("uncertain", r) if r else
                ("fake" if s >= self.threshold else "real", None)
                for s, r, v in zip(scores, reasons, vetoed)]

    def head_scores(self, x: np.ndarray) -> np.ndarray:
        """The head's P(fake), through the calibration map when the detector has one."""
        return self.calibrated(self.head.predict(x))

    def calibrated(self, scores: np.ndarray) -> np.ndarray:
        from .evaluation.calibration import apply_calibration
        return apply_calibration(scores, self.calibration)

    def predict_batch(self, batch: list[Item]) -> list[Result]:
        """Prepared items in, one Result each; failed items keep their error."""
        if self.needs_text:  # a caption model cannot score an image without its caption
            for it in batch:
                if it.ok and it.sample.text is None:
                    it.error = "missing_text: this model also reads a caption; none was given for this image"
        def score(items: list[Item]):
            x = stack(items) if self.modality != "text" else None
            values, features, by_name = self.scores_and_features(
                x, [it.sample.text for it in items] if self.needs_text else None, items)
            return values, self.verdicts(values, features), by_name

        ok = [it for it in batch if it.ok]
        passed = run_isolating(score, ok, self.spec) if ok else []
        scored, experts = [], []
        for _, (values, verdicts, by_name) in passed:  # in batch order: run_isolating keeps it
            scored += zip(values, verdicts)
            if by_name is not None:  # a fusion: each expert's score beside the fused one
                experts += [{k: None if np.isnan(v[i]) else float(v[i]) for k, v in by_name.items()}
                            for i in range(len(values))]
        scores, experts = iter(scored), iter(experts)
        out = []
        for it in batch:
            if it.ok:
                s, (label, reason) = next(scores)
                if not np.isfinite(s):  # no verdict from NaN (and NaN is not JSON): this image's error
                    out.append(Result(it.sample.path, it.sha256, None, None, self.threshold, self.id, self.version,
                                      "non_finite_score: the model gave no finite score for this image (NaN or infinite weights or features)"))
                    continue
                out.append(Result(it.sample.path, it.sha256, float(s), label, self.threshold, self.id, self.version,
                                  reason=reason, experts=next(experts, None)))
            else:
                out.append(Result(it.sample.path, it.sha256, None, None, self.threshold, self.id, self.version,
                                  it.error))
        return out

    def iter_predict(self, samples: Iterable[Sample], limits: ImageLimits = DEFAULT_LIMITS,
                     workers: int | None = None, provenance: str = "off") -> Iterator[list[Result]]:
        """Batches of results in input order, decoding overlapped with the forward pass.

        `provenance` ("off", "report", "decide"): as `fakescope scan --provenance`: each file's
        bytes are read once, for its provenance object and its pixels; "decide" applies
        provenance.apply_rule to the verdict (the score is never changed)."""
        from .provenance import apply_rule, check_mode
        size = forward_size(self)
        found: dict[int, dict] = {}  # id(sample) -> its provenance, until its result is out
        if check_mode(provenance) != "off":
            samples = _with_provenance(samples, limits, found)
        for batch in batched(iter_items(samples, self.spec, limits=limits, workers=workers,
                                        defer=self.deferred_parts), size):
            results = self.predict_batch(batch)
            if provenance != "off":
                for it, r in zip(batch, results):
                    r.provenance = found.pop(id(it.sample), None)
                    r.label, r.reason = apply_rule(r.label, r.reason, r.provenance, provenance)
            yield results

    def predict(self, inputs: str | Path | Image.Image | np.ndarray | bytes | Sequence,
                texts: str | Sequence[str] | None = None, provenance: str = "decide") -> list[Result]:
        """Paths, PIL images, HxWx3 uint8 arrays or raw bytes (one or a list) -> a list of Results.

        `texts`: one caption per input, for detectors that read captions (`needs_text`).
        `provenance`: "decide" (default, as scan), "report" or "off": each Result's `provenance` is
        what the file's metadata says (C2PA, IPTC/XMP, EXIF, generation chunks; provenance.py) and,
        with "decide", an AI claim makes the verdict "fake" with reason "provenance: ...". PIL
        images and arrays are pixels without a file: their `provenance` is None."""
        if isinstance(inputs, (str, Path, Image.Image, np.ndarray, bytes)):
            inputs = [inputs]
            texts = [texts] if isinstance(texts, str) else texts
        samples = [_to_sample(x, i) for i, x in enumerate(inputs)]
        if texts is not None:
            if len(texts) != len(samples):
                raise ValueError(f"{len(texts)} texts for {len(samples)} images")
            for s, t in zip(samples, texts):
                s.text = t
        return [r for batch in self.iter_predict(samples, provenance=provenance) for r in batch]

    # ------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        meta = {"format": FORMAT, "id": self.id, "version": self.version, "backbone": asdict(self.spec),
                "method": self.head.method, "head": self.head.config(), "threshold": self.threshold,
                "text_encoder": self.text_encoder, "modality": self.modality, "calibration": self.calibration,
                "metadata": self.metadata}
        arrays = dict(self.head.state())
        if self.uncertainty is not None:  # its arrays ride in the head's file under a prefix
            meta["uncertainty"] = self.uncertainty.config()
            arrays.update({UNCERTAINTY_PREFIX + k: v for k, v in self.uncertainty.state().items()})
        if self.spec.kind == "trained:":
            meta["backbone"]["weights"] = _encoder_inside(self.spec.weights, Path(directory))
        if self.spec.kind == "fusion":  # each expert's trained encoder goes inside the folder too
            from .backbones.spec import fusion_spec, part_specs, recorded_widths
            parts = [replace(p, weights=_encoder_inside(p.weights, Path(directory), f"encoder_{i}"))
                     if p.kind == "trained:" else p for i, p in enumerate(part_specs(self.spec))]
            meta["backbone"] = asdict(fusion_spec(parts, recorded_widths(self.spec)))
        return save_model_dir(directory, meta, "detector.json", arrays, "head.safetensors")

    @classmethod
    def load(cls, directory: str | Path) -> "Detector":
        """A saved detector, checked as data: a broken or hostile folder is a ModelFolderError
        (one line, nothing run), never a traceback or a file read from outside the folder."""
        meta, arrays = load_model_dir(directory, "detector.json", "head.safetensors", FORMAT, "`fakescope train`")
        d = Path(directory)
        try:
            spec = model_backbone_spec(meta["backbone"], d)
            text_encoder = meta.get("text_encoder")
            if text_encoder is not None:
                check_model_ref(str(text_encoder).partition(":")[2] or str(text_encoder), d)
            threshold = finite_number(meta["threshold"], "threshold", d)
            calibration = meta.get("calibration")
            if calibration is not None:
                for k, v in calibration.items():
                    if k != "kind":
                        finite_number(v, f"calibration {k}", d)
            rule_arrays = {k[len(UNCERTAINTY_PREFIX):]: arrays.pop(k) for k in list(arrays)
                           if k.startswith(UNCERTAINTY_PREFIX)}
            uncertainty = UncertaintyRule.from_state(meta["uncertainty"], rule_arrays) if meta.get("uncertainty") else None
            head = head_from_state(meta["method"], meta["head"], arrays)
            # A head that reads the backbone's pooled feature as it is: arrays of the wrong shape fail
            # here, not mid-scan. (Heads with their own encoders have another input size; skipped.)
            dim = meta["head"].get("dim")
            if modality_reads_image(meta) and isinstance(dim, int) and 0 < dim <= 1 << 20 and dim == spec.dim \
                    and spec.pooled and not spec.layers:
                head.predict(np.zeros((1, dim), np.float32))
            det = cls(spec=spec, head=head, threshold=threshold, id=str(meta["id"]), version=str(meta["version"]),
                      metadata=meta.get("metadata", {}), text_encoder=text_encoder,
                      modality=meta.get("modality", "image"), calibration=calibration, uncertainty=uncertainty)
        except ModelFolderError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError, RecursionError) as e:
            what = f"missing key {e}" if isinstance(e, KeyError) else f"{type(e).__name__}: {str(e)[:120]}"
            raise ModelFolderError(f"{d}: broken detector ({what})") from None
        return det


def forward_size(det) -> int:
    """Images per forward pass: the detector's own `batch_size`, else its backbone's preferred size
    (EfficientNet-Lite0 on CPU is fastest at 4; backbones/offline.py). 16 for a model without one."""
    size = getattr(det, "batch_size", None)
    if size:
        return int(size)
    return preferred_batch_size(det.backbone) if hasattr(det, "backbone") else 16


def predict_in_forwards(det, items: list[Item]) -> list[Result]:
    """Prepared items of any number (a scan batch, a service micro-batch), scored in forwards of
    `forward_size(det)`: one Result per item, in order."""
    size = forward_size(det)
    return [r for i in range(0, len(items), size) for r in det.predict_batch(items[i:i + size])]


def modality_reads_image(meta: dict) -> bool:
    return meta.get("modality", "image") == "image"


def _encoder_inside(weights: str, directory: Path, name: str = "backbone_encoder") -> str:
    """A `trained:` encoder as a location inside the detector folder: copied in when it lives
    elsewhere, so the folder is whole and names nothing outside itself."""
    import shutil
    ref, sep, digest = weights.partition("#")
    src, d = Path(ref).resolve(), directory.resolve()
    if not src.is_relative_to(d):
        dest = d / name
        dest.mkdir(parents=True, exist_ok=True)
        for file in ("encoder.json", "encoder.safetensors"):
            shutil.copyfile(src / file, dest / file)
        src = dest
    return f"{src.relative_to(d)}{sep}{digest}"


PIXELS = "<image "  # the path of an image given as pixels (PIL, array): no file, no metadata


def _with_provenance(samples: Iterable[Sample], limits: ImageLimits, found: dict[int, dict]) -> Iterator[Sample]:
    """The samples with their bytes read (once: the decoder reuses them) and each provenance in
    `found` under id(sample). A file that cannot be read becomes a sample with its error; pixels
    given without a file (`_to_sample`'s PIXELS) and tar members not read yet have no provenance."""
    from dataclasses import replace

    from .images import ImageError, read_bytes
    from .provenance import read_provenance
    for s in samples:
        if s.error is None and not s.path.startswith(PIXELS) and getattr(s, "member", None) is None:
            try:
                s = replace(s, data=s.data if s.data is not None else read_bytes(s.path, limits, s.path))
                found[id(s)] = read_provenance(s.data, s.path)
            except ImageError as e:
                s = replace(s, error=e.reason)
        yield s


def _to_sample(x, i: int) -> Sample:
    if isinstance(x, (str, Path)):
        return Sample(path=str(x))
    if isinstance(x, bytes):
        return Sample(path=f"<bytes {i}>", data=x)
    if isinstance(x, np.ndarray):
        if x.dtype != np.uint8 or x.ndim not in (2, 3):
            raise ValueError("arrays must be HxW or HxWxC uint8")
        x = Image.fromarray(x)
    if isinstance(x, Image.Image):
        buf = io.BytesIO()
        x.save(buf, format="PNG")  # lossless: the decoder sees exactly these pixels
        return Sample(path=f"{PIXELS}{i}>", data=buf.getvalue())
    raise TypeError(f"cannot read {type(x).__name__} as an image")


# Detectors inside the package, loadable by name: the default (CLIP ViT-B/16) and the previous
# default on EfficientNet-Lite0, kept for users who need its speed.
SHIPPED_MODELS = (DEFAULT_MODEL, "effnet-v2")


def shipped_model_dir(name: str = DEFAULT_MODEL) -> Path:
    return Path(str(resources.files("fakescope") / "models" / name))


def default_model_dir() -> Path:
    return shipped_model_dir(DEFAULT_MODEL)


def load_detector(model: str | Path | None = None) -> Detector:
    """A shipped detector by name (`default`, `effnet-v2`), or one saved by `fakescope train` /
    `Detector.save`: a folder, or a Hugging Face Hub id `user/repo[@revision]` (hub.py). An
    existing folder of the same name wins over a shipped name."""
    if model in (None, ""):
        model = DEFAULT_MODEL
    if str(model) in SHIPPED_MODELS and not Path(model).exists():
        return Detector.load(shipped_model_dir(str(model)))
    from .hub import resolve_model
    return Detector.load(resolve_model(model))
