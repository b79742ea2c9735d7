"""`fakescope train --method fusion`: several experts, one detector.

    split (by image): validation images are held out of every expert
    -> each expert fitted through `fit_detector` on the training images in its domain
       (clip: a linear probe on CLIP ViT-B/16; lowlevel: the NPR CNN on native crops, images of
       64 px or more; thumbnail: a linear probe on EfficientNet-Lite0, images up to 96 px;
       thumbnail-npr: the NPR CNN on whole images squashed to 32 px, images up to 96 px;
       thumbnail-cnn: the same CNN on the squashed pixels instead of their NPR residual)
    -> the stacking layer (heads/fusion.py) fitted on the validation images' expert scores (with
       cuts=first, on those another expert speaks for: elsewhere the first expert's score is final)
    -> the threshold (`cuts`): pooled: the usual rule on the fused scores of all validation reals;
       groups (or equalise=true): the stacker's offsets set so that 0.5 calls the target share of
       each domain group's reals fake (docs/results.md 11.3 shows what each does to camera photos);
       first: the first expert is fitted as a whole detector (threshold, "uncertain" rule) on the
       same split, and the fused score *is* its score wherever it speaks alone, each other group cut
       at its threshold by that group's own validation reals: experts for thumbnails then change
       the verdicts on thumbnails and nothing else (the shipped default, results.md 11.6)
    -> each referee's cut (an expert that does not vote: native) on the validation reals it speaks
       for, at the run's target false-positive rate; where it says real and the fused verdict is fake
       (objects=both: any verdict it does not share) the detector says "uncertain: experts disagree";
       with a veto (<expert>.veto=RATE), under the score that RATE of a training source's fakes
       fall below when its head never saw that source, it says "real" instead
    -> "uncertain": with cuts=first, the first expert's rule; otherwise fitted on its features
       (familiarity) and the fused score (band)
    -> Detector(fusion backbone of the experts' backbones + imagesize, FusionHead)

The stacker has two numbers per expert and a bias, so fitting it and the threshold on the same
held-out images costs little; the protocols (evaluation/protocols.py) judge the whole recipe on
sources it never saw. Options (`--set`): experts=clip,thumbnail (also lowlevel, thumbnail-npr,
thumbnail-cnn, and native, a referee: it does not vote, and where its verdict differs the
detector says "uncertain: experts disagree");
stack_l2=1.0; cuts=pooled|groups|first; and any expert's own option as <expert>.<key>=<value>
(e.g. lowlevel.epochs=4, clip.backbone=effnet-lite0), including <expert>.domain=MIN:MAX (shorter
side, px), <expert>.train_on=domain|all, <expert>.role=voter|referee, <expert>.objects=fake|both (what a referee objects to: a "fake"
verdict only, the default, or any verdict it does not share), <expert>.veto=RATE (a referee's veto: 0, none, by default), <expert>.views=K and <expert>.per_class=N (this expert's own share of
--data, e.g. all of CIFAKE for a thumbnail CNN, minus the run's held-out images).
"""
from __future__ import annotations

import io
from dataclasses import replace
from typing import Sequence

import numpy as np

from ..backbones import load_backbone
from ..backbones.spec import block_widths, fusion_spec
from ..backbones.fusion import imagesize_spec
from ..data.samples import FAKE, REAL, Sample
from ..detector import Detector
from ..features import FeatureCache, extract
from ..heads.fusion import OBJECTIONS, FusionHead
from ..uncertainty import fit_uncertainty, source_band
from .common import (describe, held_out_split, out_of_source_scores, source_parts, subset_of_parts,
                     threshold_and_validation, training_samples)
from .methods import register_recipe

# name -> (TrainConfig fields, domain: [min, max] of the image's shorter side (max None: no limit) where
# the expert speaks, and what it trains on: "domain" (those images only) or "all")
EXPERTS = {
    "clip": ({"backbone": "clip-b16", "method": "linear", "head_options": {}}, [0, None], "domain"),
    "lowlevel": ({"method": "lowlevel", "head_options": {"encoder": "npr-small"}}, [64, None], "domain"),
    # small images read by a second frozen network (ImageNet features see a 32 px thumbnail differently
    # from CLIP), trained on the small images only
    "thumbnail": ({"backbone": "effnet-lite0", "method": "linear", "head_options": {}}, [0, 96], "domain"),
    # the NPR CNN on every image squashed to 32 px: a source of small images held out (CIFAKE) is then
    # judged by what generated images of every other source look like at 32 px
    "thumbnail-npr": ({"method": "lowlevel", "head_options": {"encoder": "npr-tiny", "thumbnail": True}}, [0, 96],
                      "all"),
    # the same CNN on the thumbnail's pixels, not its NPR residual: at 32 px a squashed image keeps
    # no up-sampling trace to read, and on CIFAKE the pixels reach 0.988 (results.md 11.5)
    "thumbnail-cnn": ({"method": "lowlevel", "head_options": {"encoder": "npr-tiny", "thumbnail": True,
                                                               "residual": False, "epochs": 20}}, [0, 96], "all"),
    # a referee (below): CLIP's blocks 3-6 read at native resolution in four windows, without its
    # whole-image read; it calls an unseen camera collection fake 10x less often than the whole-image
    # read does (results.md 11.11). Images of 64 px or more: a thumbnail has no native pixels to read
    "native": ({"backbone": "clip-b16?windows=3,4,5,6&pooled=0", "method": "linear", "head_options": {}}, [64, None],
               "domain"),
}
# experts that do not vote: the stacker leaves them out, and where one's verdict at its own cut is not
# the fused one the detector says "uncertain: experts disagree" (heads/fusion.py); `<expert>.role=` changes it
ROLES = {"native": "referee"}
# a referee objects to "fake" verdicts only, by default: it is there to keep a camera photo unlike the
# training reals from being called fake; objecting to "real" verdicts too cost held-out fakes' coverage
# (people 0.606 against 0.747 answered at 400 per class, results.md 11.12). `<expert>.objects=both`
REFEREE_OBJECTS = "fake"
# a referee's veto, as the share of an unseen source's fakes it may free (read off out-of-source
# scores): under that score its "real" overrules the voters' "fake" instead of making it "uncertain"
# (results.md 11.14: not worth it on unseen generators, so 0: no veto). `<expert>.veto=`
REFEREE_VETO = 0.0
DEFAULT_EXPERTS = "clip,thumbnail"
# pooled: the usual rule on the fused score; groups: target_fpr within each group of images the
# same experts speak for; first: the first expert's own detector wherever it speaks alone, every
# other group cut at its threshold (heads/fusion.py anchor_to_first)
CUT_RULES = ("pooled", "groups", "first")


def shorter_side(sample: Sample) -> int | None:
    """The image's shorter side from its header (no pixels decoded); None if unreadable."""
    from PIL import Image
    try:
        with Image.open(io.BytesIO(sample.data) if sample.data is not None else sample.path) as im:
            return min(im.size)
    except Exception:  # unreadable here is unreadable later: the expert's own reader reports it
        return None


def in_domain(side: int | None, domain) -> bool:
    lo, hi = domain
    return side is not None and side >= lo and (hi is None or side <= hi)


def expert_configs(cfg, options: dict) -> list[tuple[str, object, list]]:
    """[(name, TrainConfig, domain, train_on)] from cfg and the --set options."""
    names = [n.strip() for n in str(options.get("experts", DEFAULT_EXPERTS)).split(",") if n.strip()]
    unknown = [n for n in names if n not in EXPERTS]
    if unknown or not names:
        raise ValueError(f"--method fusion: unknown expert(s) {unknown}; choose from {', '.join(EXPERTS)}")
    bad = [k for k in options if k not in ("experts", "stack_l2", "equalise", "cuts", "run_dir")
           and k.split(".", 1)[0] not in names]
    if bad:
        raise ValueError(f"--method fusion: unknown option(s) {bad}; use experts=..., stack_l2=..., equalise=... "
                         "or <expert>.<key>=...")
    out = []
    for name in names:
        fields, domain, train_on = EXPERTS[name]
        changes = {k: v for k, v in fields.items() if k != "head_options"}
        # another method for this expert: the preset's method options do not apply to it
        overridden = options.get(f"{name}.method", changes["method"]) != changes["method"]
        head_options = {} if overridden else dict(fields.get("head_options", {}))
        for key, value in options.items():
            if key.startswith(name + "."):
                k = key.split(".", 1)[1]
                if k in ("backbone", "method"):
                    changes[k] = value
                elif k in ("per_class", "views"):  # its own share of --data (e.g. every CIFAKE image); views
                    changes[k] = int(value)
                elif k == "domain":
                    lo, _, hi = str(value).partition(":")
                    domain = [int(lo or 0), int(hi) if hi else None]
                elif k == "role":
                    if value not in ("voter", "referee"):
                        raise ValueError(f"{key} must be voter or referee, not {value!r}")
                elif k == "objects":
                    if value not in OBJECTIONS:
                        raise ValueError(f"{key} must be one of {', '.join(OBJECTIONS)}, not {value!r}")
                elif k == "veto":
                    veto_miss_rate(name, options)  # checked here, read when the cuts are set
                elif k == "train_on":
                    if value not in ("domain", "all"):
                        raise ValueError(f"{key} must be domain or all, not {value!r}")
                    train_on = value
                else:
                    head_options[k] = value
        if options.get("run_dir") and changes.get("method") == "lowlevel":
            head_options.setdefault("run_dir", f"{options['run_dir']}/{name}")
        # no held-out split inside an expert: the fusion's validation images are held out of all of
        # them already, and every training image is worth more to the expert than its own metadata
        out.append((name, replace(cfg, head_options=head_options, uncertainty=None, val_fraction=0.0, **changes),
                    domain, train_on))
    return out


def expert_role(name: str, options: dict) -> str:
    """voter (read by the stacking layer) or referee (a second opinion: `ROLES`, `<expert>.role=`)."""
    return str(options.get(f"{name}.role", ROLES.get(name, "voter")))


def veto_miss_rate(name: str, options: dict) -> float:
    """A referee's veto (`<expert>.veto=`): the share of an unseen source's fakes allowed under it; 0 = no veto."""
    value = options.get(f"{name}.veto", REFEREE_VETO)
    try:
        rate = float(value)
    except (TypeError, ValueError):
        rate = -1.0
    if not 0.0 <= rate < 0.5:
        raise ValueError(f"{name}.veto must be a share of fakes in [0, 0.5), not {value!r}")
    return rate


def scores_of_unseen_sources(ecfg, det: Detector, samples: Sequence[Sample], log) -> tuple | None:
    """(labels, scores, sources): each of an expert's training sources scored by its head fitted
    without that source (common.py `out_of_source_scores`, as the "uncertain" band reads them), from
    the features its fit cached. None with fewer than two sources."""
    cache = FeatureCache(ecfg.cache, det.spec) if ecfg.cache else None
    rows, X, _ = extract(samples, det.backbone, cache, views=range(ecfg.views), augment=ecfg.augment,
                         desc="out-of-source features")
    mine = [samples[i] for i, _ in rows]
    return out_of_source_scores(ecfg, det.backbone, X, np.array([s.label for s in mine]),
                                np.array([s.group_key() for s in mine]), np.array([str(s.source) for s in mine]),
                                np.array([v == 0 for _, v in rows]), log=log)


def referee_veto(unseen: tuple | None, head: FusionHead, name: str, miss_rate: float) -> float | None:
    """A referee's veto: for each training source with fakes, the score under which `miss_rate` of
    them fall when its head never saw that source (never above the referee's cut), averaged over
    the sources, as the "uncertain" band's per-source cuts (uncertainty.py). A fake from a generator
    nobody trained on is what a veto must not free; held-out fakes of the training generators sit
    far above it (results.md 11.14)."""
    cut = next(e.get("cut") for e in head.experts if e["name"] == name)
    if unseen is None or cut is None or not (np.asarray(unseen[0]) == FAKE).any():
        return None
    return source_band(*unseen, cut, miss_rate, miss_rate, per_source=True)[0]


def cut_rule(options: dict) -> str:
    """How the fused detector's threshold is set: `cuts=pooled|groups|first` (`equalise=true` is groups)."""
    rule = str(options.get("cuts", "")).lower()
    if not rule:
        return "groups" if str(options.get("equalise", "false")).lower() in ("1", "true", "yes", "on") else "pooled"
    if rule not in CUT_RULES:
        raise ValueError(f"--method fusion: cuts={rule!r}; choose from {', '.join(CUT_RULES)}")
    return rule


def own_shares(cfg, configs) -> dict[str, int | None]:
    """{expert: per_class} for the experts given their own `<expert>.per_class`."""
    return {name: ecfg.per_class for name, ecfg, _, _ in configs if ecfg.per_class != cfg.per_class}


def expert_pools(cfg, shares: dict, parts) -> dict[str, list[Sample]]:
    """Each expert with its own share: that many images per class and source of `parts` (every
    image of each source, read once), minus every image whose group the run's held-out split holds
    (the same hash decides: data/splits.py), so the stacker and the threshold still see only images
    no expert trained on. The others train on the run's training split."""
    pools = {}
    for name, n in shares.items():
        pools[name], _ = held_out_split(cfg, subset_of_parts(parts, n, cfg.seed))
    return pools


@register_recipe("fusion")
def fit_fused_detector(cfg, samples: Sequence[Sample] | None, log, fit_detector):
    """cfg: a fit.TrainConfig with method fusion; each expert is fitted through `fit_detector`
    (fit.fit_detector, handed in: methods.py), any method it names."""
    options = dict(cfg.head_options)
    rule = cut_rule(options)
    configs = expert_configs(cfg, options)
    if rule == "first" and (configs[0][2] != [0, None] or configs[0][3] != "domain"):
        raise ValueError("--method fusion: cuts=first needs a first expert that speaks for every image")
    if expert_role(configs[0][0], options) == "referee":
        raise ValueError("--method fusion: the first expert votes; a referee can only be a later one")
    shares, parts = own_shares(cfg, configs), None
    if shares and samples is not None:
        log(f"fusion: per_class of {', '.join(shares)} ignored: the images were given, not read from --data")
    elif shares:  # every image of every source, read once: the run's share and the experts' own
        parts = source_parts(cfg.data)
    base = training_samples(cfg, samples if parts is None else subset_of_parts(parts, cfg.per_class, cfg.seed))
    train, val = held_out_split(cfg, base)
    pools = expert_pools(cfg, shares, parts) if parts is not None else {}
    for name, pool in pools.items():
        log(f"fusion: expert {name} draws from {len(pool)} training images (per_class {shares[name]})")
    sides: dict[int, int | None] = {}
    experts, record, anchor = [], {}, None
    unseen: dict[str, tuple | None] = {}  # a referee with a veto: its training sources, each scored unseen
    for i, (name, ecfg, domain, train_on) in enumerate(configs):
        pool = pools.get(name, train)
        if train_on != "all":  # header reads, once per image
            for s in pool:
                if id(s) not in sides:
                    sides[id(s)] = shorter_side(s)
        mine = [s for s in pool if train_on == "all" or in_domain(sides[id(s)], domain)]
        if len({s.label for s in mine}) < 2:
            if i == 0 and rule == "first":
                raise ValueError(f"--method fusion: the first expert {name} has no real and fake training images")
            log(f"fusion: expert {name} has no real and fake training images in its domain {domain}; left out")
            continue
        log(f"fusion: expert {name} ({ecfg.method} on {ecfg.backbone if ecfg.method != 'lowlevel' else 'NPR CNN'}), "
            f"{len(mine)} training images ({train_on}); speaks for images in {domain}")
        if i == 0 and rule == "first":
            # the anchor is a whole detector: fitted on the run's images with the run's held-out split
            # (the same hash: its validation images are the fusion's), threshold and "uncertain" rule
            anchor = fit_detector(replace(ecfg, val_fraction=cfg.val_fraction, uncertainty=cfg.uncertainty),
                                  base if name not in pools else pool + val, log=log)
            det = anchor
        else:
            det = fit_detector(ecfg, mine, log=log)
            if expert_role(name, options) == "referee" and veto_miss_rate(name, options) > 0:
                unseen[name] = scores_of_unseen_sources(ecfg, det, mine, log)
        experts.append((name, det, domain))
        record[name] = {"role": expert_role(name, options), "method": ecfg.method, "backbone": det.spec.name if ecfg.method != "lowlevel" else "NPR CNN",
                        "domain": domain, "train_on": train_on, "train": describe(mine),
                        "options": {k: v for k, v in ecfg.head_options.items() if k != "run_dir"}}
    if not experts:
        raise ValueError("--method fusion: no expert could be trained")
    widths = [sum(block_widths(d.backbone)) for _, d, _ in experts]  # measured: a spec's dim may not say it
    spec = fusion_spec([d.spec for _, d, _ in experts] + [imagesize_spec()], widths + [2])
    roles = {n: expert_role(n, options) for n, _, _ in experts}
    referee = {n: {"role": "referee", "cut": None, "objects": str(options.get(f"{n}.objects", REFEREE_OBJECTS))}
               for n, role in roles.items() if role == "referee"}
    head = FusionHead(experts=[{"name": n, "dim": w, "domain": dom, **referee.get(n, {})}
                               for (n, _, dom), w in zip(experts, widths)],
                      heads=[d.head for _, d, _ in experts], l2=float(options.get("stack_l2", 1.0)))
    backbone = load_backbone(spec)
    cache = FeatureCache(cfg.cache, spec) if cfg.cache else None
    vrows, VX, _ = extract(val, backbone, cache, desc="validation features")
    vsamples = [val[i] for i, _ in vrows]
    vy = np.array([s.label for s in vsamples])
    if len(set(vy.tolist())) < 2:
        raise ValueError("--method fusion: the stacking layer needs real and fake validation images")
    info = head.fit_anchored(VX, vy) if rule == "first" else head.fit(VX, vy)
    info["cuts"] = rule
    if rule == "groups":
        info["cuts_before_equalising"] = head.equalise_domains(VX[vy == REAL], cfg.target_fpr)
    elif rule == "first":
        info["offsets"] = head.anchor_to_first(VX[vy == REAL], anchor.threshold, cfg.target_fpr)
    if "referee" in roles.values():  # each referee cut on the held-out reals, as a detector's threshold
        info["referee_cuts"] = head.set_referee_cuts(VX[vy == REAL], cfg.target_fpr)
        info["referee_vetoes"] = head.set_referee_vetoes(
            {n: referee_veto(o, head, n, veto_miss_rate(n, options)) for n, o in unseen.items()})
    vs = head.predict(VX)
    threshold, val_metrics, by_source = threshold_and_validation(
        cfg, vsamples, vy, vs, threshold=anchor.threshold if anchor is not None else None)
    uncertainty = None
    first = experts[0][1]
    if anchor is not None:
        uncertainty = anchor.uncertainty  # the same features (the first expert's) and, outside other domains, scores
    elif cfg.uncertainty is not None:
        fc = FeatureCache(cfg.cache, first.spec) if cfg.cache else None
        _, TX, _ = extract([s for s in train if in_domain(sides[id(s)] if id(s) in sides else shorter_side(s),
                                                          experts[0][2])],
                           first.backbone, fc, desc="familiarity features")
        uncertainty = fit_uncertainty(TX, head.uncertainty_input(VX), vy, vs, threshold, cfg.uncertainty, seed=cfg.seed)
    metadata = dict(first.metadata)
    metadata.update({"recipe": "fusion", "data": [str(d) for d in cfg.data], "train": describe(train),
                     "validation": describe(val), "validation_metrics": val_metrics,
                     "validation_by_source": by_source, "experts": record, "fit": info})
    return Detector(spec=spec, head=head, threshold=threshold, id=cfg.model_id, version=cfg.version,
                    metadata=metadata, _backbone=backbone, uncertainty=uncertainty)


__all__ = ["DEFAULT_EXPERTS", "EXPERTS", "ROLES", "expert_role", "fit_fused_detector", "shorter_side"]
