"""Fusion: several experts' heads over their own slices of one feature vector, and a stacking layer.

A fused detector's backbone is a `fusion` of parts (backbones/fusion.py): each expert's backbone
and, last, `imagesize` (width, height). This head holds each expert's head (any registered method,
saved under `expert.<name>.`) and reads its columns; an expert whose domain (a range of the image's
shorter side) does not hold the image abstains. The stacking layer is a logistic regression on, per
expert, [applies * logit P_e(fake), applies]: an abstaining expert adds nothing, and the bias
learns what to do without it. It is fitted on images the experts were not trained on (fusion.py),
then its offsets are set so that one threshold holds the same false-positive rate in each group of
images the same experts speak for (`equalise_domains`).

`predict_with_experts(X)` gives the fused score and each expert's P(fake) (NaN where it abstains)
from one run of every expert's head: the JSON line shows them beside the fused score, so a user
sees which kind of evidence spoke.

A *referee* (an expert with `"role": "referee"`, its own `"cut"` and what it `"objects"` to) never votes: the stacker does
not read it, so the fused score is what the voting experts make of the image. It is a second
opinion: where it speaks and its verdict at its cut differs from the fused verdict at the
detector's threshold, the detector answers "uncertain: the experts disagree" (`disagreements`,
read by detector.py). Two experts that read different evidence (CLIP's whole-image read and its
native-resolution windows, results.md 11.11) rarely err together on an unseen source. A referee
may also hold a `"veto"`: a score so low that only a small share of the fakes of a source it never
saw fall under it (`set_referee_vetoes`). Where the voters say fake and the referee scores under its veto, the
detector answers "real" with the reason (`vetoes`): a disagreement that confident is an answer,
not a doubt (results.md 11.14).
"""
from __future__ import annotations

import math

import numpy as np

from .registry import head_from_state, register


# what a referee objects to: any verdict of the voters' it does not share, or only a "fake" verdict
OBJECTIONS = ("both", "fake")


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def stacking_input(probabilities: np.ndarray, applies: np.ndarray) -> np.ndarray:
    """The stacker's columns: per expert, [applies * logit P_e(fake), applies]."""
    z = np.clip(logit(probabilities), -12, 12)
    return np.concatenate([applies * z, applies], axis=1)


@register
class FusionHead:
    method = "fusion"

    def __init__(self, experts: list[dict] | None = None, heads: list | None = None, weights=None, bias: float = 0.0,
                 l2: float = 1.0, **_):
        # experts: [{"name", "method", "config", "dim", "domain": [min side, max side or null]}], in column order
        self.experts, self.heads = list(experts or []), list(heads or [])
        self.weights = None if weights is None else np.asarray(weights, np.float64)
        self.bias, self.l2 = float(bias), float(l2)

    # ------------------------------------------------------------ columns
    def _slices(self, X: np.ndarray) -> list[np.ndarray]:
        out, start = [], 0
        for e in self.experts:
            out.append(X[:, start:start + int(e["dim"])])
            start += int(e["dim"])
        if X.shape[1] != start + 2:
            raise ValueError(f"fusion head reads {start + 2} columns (experts + image size), got {X.shape[1]}")
        return out

    def applies(self, X: np.ndarray) -> np.ndarray:
        """(n, E) 1 where the image's shorter side is in the expert's domain."""
        return self.applies_to_sizes(X[:, -2:])

    def applies_to_sizes(self, sizes: np.ndarray) -> np.ndarray:
        """`applies` from the images' (width, height) alone: before any expert has run."""
        side = np.asarray(sizes, np.float64).min(axis=1)
        cols = []
        for e in self.experts:
            lo, hi = e.get("domain") or [0, None]
            cols.append((side >= float(lo)) & (side <= (math.inf if hi is None else float(hi))))
        return np.stack(cols, axis=1).astype(np.float64) if cols else np.zeros((len(X), 0))

    def is_referee(self, e: dict) -> bool:
        return e.get("role") == "referee"

    def objects_to_fake_only(self, e: dict) -> bool:
        """A referee that can only object to a "fake" verdict: it has nothing to say about an image
        the voters call real, so a scan need not run it there (detector.py)."""
        return self.is_referee(e) and e.get("cut") is not None and e.get("objects", "both") == "fake"

    def votes(self, X: np.ndarray) -> np.ndarray:
        """(n, E) `applies` with every referee's column 0: what the stacking layer reads."""
        a = self.applies(X)
        voters = np.array([0.0 if self.is_referee(e) else 1.0 for e in self.experts])
        return a * voters if len(voters) else a

    def _referees_with(self, key: str, X: np.ndarray):
        """(index, its P(fake) on X, where it speaks) of each referee that holds `key` ("cut", "veto")."""
        referees = [i for i, e in enumerate(self.experts) if self.is_referee(e) and e.get(key) is not None]
        if not referees or not len(X):
            return []
        p, a = self.expert_probabilities(X), self.applies(X)
        return [(i, p[:, i], a[:, i] > 0) for i in referees]

    def disagreements(self, X: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
        """(n,) True where a referee speaks for the image and its verdict at its own cut is not the
        detector's verdict (`scores` at `threshold`). A referee with `"objects": "fake"` objects only
        to a "fake" verdict (it says real): it guards reals against false accusations without
        taking answers away from the fakes the voters find (results.md 11.12)."""
        out, fake = np.zeros(len(X), bool), np.asarray(scores) >= threshold
        for i, p, speaks in self._referees_with("cut", X):
            objection = (p >= float(self.experts[i]["cut"])) != fake
            if self.experts[i].get("objects", "both") == "fake":
                objection &= fake
            out |= speaks & objection
        return out

    def vetoes(self, X: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
        """(n,) True where the voters say fake (`scores` at `threshold`) and a referee that speaks for
        the image scores under its veto: the referee overrules the "fake" verdict."""
        out, fake = np.zeros(len(X), bool), np.asarray(scores) >= threshold
        for i, p, speaks in self._referees_with("veto", X):
            out |= speaks & fake & (p < float(self.experts[i]["veto"]))
        return out

    def set_referee_vetoes(self, vetoes: dict[str, float | None]) -> dict:
        """Each referee's veto from `vetoes` (name -> score; training/fusion.py reads it off the fakes
        of sources its head never saw), never above its cut: a veto is a surer "real" than an
        objection. A referee without a cut, or missing from `vetoes`, has none."""
        out = {}
        for e in self.experts:
            if self.is_referee(e):
                value = vetoes.get(e["name"])
                e["veto"] = None if value is None or e.get("cut") is None else min(float(value), float(e["cut"]))
                out[e["name"]] = e["veto"]
        return out

    def set_referee_cuts(self, X_real: np.ndarray, target_fpr: float, min_reals: int = 10) -> dict:
        """Each referee's cut: the score at which `target_fpr` of the held-out reals it speaks for are
        called fake (the rule every detector's threshold follows); with fewer than `min_reals` of
        them it has no cut and never objects."""
        from ..evaluation.metrics import threshold_at_fpr
        p, a, cuts = self.expert_probabilities(X_real), self.applies(X_real), {}
        for i, e in enumerate(self.experts):
            if self.is_referee(e):
                mine = a[:, i] > 0
                e["cut"] = float(threshold_at_fpr(p[mine, i], target_fpr)) if mine.sum() >= min_reals else None
                cuts[e["name"]] = e["cut"]
        return cuts

    def expert_probabilities(self, X: np.ndarray) -> np.ndarray:
        return np.stack([np.asarray(h.predict(x), np.float64) for h, x in zip(self.heads, self._slices(X))], axis=1)

    def stacking_features(self, X: np.ndarray) -> np.ndarray:
        return stacking_input(self.expert_probabilities(X), self.votes(X))

    # ------------------------------------------------------------ head protocol
    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> dict:
        """Fit the stacking layer only (the experts are fitted before, on other images)."""
        from sklearn.linear_model import LogisticRegression
        S = self.stacking_features(X)
        lr = LogisticRegression(C=1.0 / max(self.l2, 1e-9), class_weight="balanced", max_iter=1000).fit(S, y)
        self.weights, self.bias = lr.coef_[0].astype(np.float64), float(lr.intercept_[0])
        names = [e["name"] for e in self.experts]
        return {"stacker": {**{f"{n}.logit": float(w) for n, w in zip(names, self.weights[:len(names)])},
                            **{f"{n}.applies": float(w) for n, w in zip(names, self.weights[len(names):])},
                            "bias": self.bias},
                "applies_share": {n: float(v) for n, v in zip(names, self.applies(X).mean(0))}}

    def equalise_domains(self, X_real: np.ndarray, target_fpr: float, min_reals: int = 20) -> dict:
        """Shift the stacker's per-expert "applies" weights and bias so that 0.5 is, within each group of
        images the same experts speak for (e.g. thumbnails, full-size photos), the score at which
        `target_fpr` of that group's held-out reals are called fake. One pooled threshold would spend
        the false-positive budget where the reals are hardest (a 32 px photo) and loosen it elsewhere.
        Groups with fewer than `min_reals` reals keep their offset. Returns each group's cut before."""
        from ..evaluation.metrics import threshold_at_fpr
        a = self.votes(X_real)
        z = stacking_input(self.expert_probabilities(X_real), a) @ self.weights + self.bias
        patterns, rows, shifts, cuts = sorted({tuple(r) for r in a.tolist()}), [], [], {}
        for pat in patterns:
            m = (a == np.array(pat)).all(axis=1)
            if m.sum() < min_reals:
                continue
            cut = threshold_at_fpr(z[m], target_fpr) + 1e-5  # in logit units; the margin survives float32 scores
            cuts[self.group_name(pat)] = float(cut)
            rows.append(list(pat) + [1.0])
            shifts.append(-cut)
        if rows:
            delta = np.linalg.lstsq(np.array(rows), np.array(shifts), rcond=None)[0]
            E = len(self.experts)
            self.weights = self.weights.copy()
            self.weights[E:] += delta[:E]
            self.bias += float(delta[E])
        return cuts

    def group_name(self, pattern) -> str:
        """A group of images by the experts that speak for it, e.g. "clip+thumbnail-cnn"."""
        return "+".join(e["name"] for e, on in zip(self.experts, pattern) if on) or "none"

    def beyond_first(self, X: np.ndarray) -> np.ndarray:
        """Rows some expert other than the first speaks for: where a stacker anchored to the first
        expert (`anchor_to_first`) has something to learn."""
        return self.votes(X)[:, 1:].any(axis=1)

    def fit_anchored(self, X: np.ndarray, y: np.ndarray) -> dict:
        """Fit the stacking layer for `anchor_to_first`: on the rows beyond the first expert's lone
        domain only (the rest will be its own score whatever the fit says, and would otherwise pull
        the first expert's weight towards what suits them); none with both classes: the first
        expert alone (weights 1, 0, ...)."""
        rows = self.beyond_first(X)
        if len(set(np.asarray(y)[rows].tolist())) == 2:
            return {**self.fit(X[rows], y[rows]), "stacker_rows": int(rows.sum())}
        E = len(self.experts)
        self.weights, self.bias = np.concatenate([[1.0], np.zeros(2 * E - 1)]), 0.0
        return {"stacker": "the first expert alone: no validation images of both classes in another expert's domain",
                "stacker_rows": int(rows.sum())}

    def anchor_to_first(self, X_real: np.ndarray, threshold: float, target_fpr: float, min_reals: int = 20) -> dict:
        """Make the first expert's detector the fused one wherever no other expert speaks, and cut
        every other group at `threshold` too.

        Where only the first expert applies, the fused score becomes its P(fake) itself (logit weight 1,
        offsets 0), so its threshold and "uncertain" band hold unchanged there: an expert for
        thumbnails then changes the verdicts on thumbnails and nothing else. The other logit weights
        are divided by the first one's, which keeps each group's ranking; each other group's offset is
        set so that `threshold` calls `target_fpr` of its held-out reals fake (a group with fewer than
        `min_reals` reals keeps its fitted offset). Returns each group's offset."""
        from ..evaluation.metrics import threshold_at_fpr
        E = len(self.experts)
        scale = float(self.weights[0])
        if scale <= 1e-6:  # the stacker found no use for the first expert: keep it as the anchor anyway
            scale = 1.0
        w = self.weights.copy()
        w[:E] /= scale
        w[0] = 1.0
        offsets_before = w[E:] / scale, self.bias / scale
        a = self.votes(X_real)
        z = stacking_input(self.expert_probabilities(X_real), a)[:, :E] @ w[:E]  # logit terms, no offsets
        patterns = sorted({tuple(r) for r in a.tolist()})
        rows, targets, offsets = [], [], {}
        for pat in patterns:
            name = self.group_name(pat)
            m = (a == np.array(pat)).all(axis=1)
            if pat == (1.0,) + (0.0,) * (E - 1):
                target = 0.0                  # the first expert alone: its own score
            elif m.sum() >= min_reals:        # the offset that puts this group's cut at `threshold`
                target = float(logit(threshold)) - (threshold_at_fpr(z[m], target_fpr) + 1e-5)
            else:                             # too few reals to set a cut: the fitted offset
                target = float(np.array(pat) @ offsets_before[0] + offsets_before[1])
            rows.append(list(pat) + [1.0])
            targets.append(target)
            offsets[name] = target
        if rows:
            delta = np.linalg.lstsq(np.array(rows), np.array(targets), rcond=None)[0]
            w[E:], self.bias = delta[:E], float(delta[E])
        self.weights = w
        return offsets

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.predict_with_experts(X)[0]

    def expert_scores(self, X: np.ndarray) -> dict[str, np.ndarray]:
        return self.predict_with_experts(X)[1]

    def predict_with_experts(self, X: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The fused P(fake) and each expert's (NaN where it abstains), every expert's head run once."""
        p, a = self.expert_probabilities(X), self.applies(X)
        z = stacking_input(p, self.votes(X)) @ self.weights + self.bias
        fused = (1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))).astype(np.float32)
        return fused, {e["name"]: np.where(a[:, i] > 0, p[:, i], np.nan) for i, e in enumerate(self.experts)}

    def expert_features(self, X: np.ndarray, name: str) -> np.ndarray:
        return self._slices(X)[[e["name"] for e in self.experts].index(name)]

    def uncertainty_input(self, X: np.ndarray) -> np.ndarray:
        """What the detector's "uncertain" rule measures familiarity on: the first expert's features
        (by convention the general one, e.g. CLIP: its space says what the training images were)."""
        return self._slices(X)[0]

    def config(self) -> dict:
        return {"experts": [{**e, "method": h.method, "config": h.config()} for e, h in zip(self.experts, self.heads)],
                "bias": self.bias, "l2": self.l2, "dim": int(sum(int(e["dim"]) for e in self.experts) + 2)}

    def state(self) -> dict[str, np.ndarray]:
        out = {"stacker.weights": np.asarray(self.weights, np.float32)}
        for e, h in zip(self.experts, self.heads):
            out.update({f"expert.{e['name']}.{k}": v for k, v in h.state().items()})
        return out

    @classmethod
    def from_state(cls, config: dict, state: dict[str, np.ndarray]) -> "FusionHead":
        experts, heads = [], []
        for e in config["experts"]:
            prefix = f"expert.{e['name']}."
            heads.append(head_from_state(e["method"], e["config"],
                                         {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}))
            expert = {k: v for k, v in e.items() if k not in ("method", "config")}
            if expert.get("role", "voter") not in ("voter", "referee"):
                raise ValueError(f"fusion expert {e['name']!r}: unknown role {expert['role']!r}")
            if expert.get("objects", "both") not in OBJECTIONS:
                raise ValueError(f"fusion expert {e['name']!r}: objects must be one of {OBJECTIONS}")
            for key in ("cut", "veto"):  # a folder is data: a referee's numbers are checked as such
                value = expert.get(key)
                if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                          or not math.isfinite(value)):
                    raise ValueError(f"fusion expert {e['name']!r}: {key} must be a finite number, not {value!r}")
            if expert.get("veto") is not None and expert.get("cut") is None:
                raise ValueError(f"fusion expert {e['name']!r}: a veto needs a cut")
            experts.append(expert)
        weights = np.asarray(state["stacker.weights"], np.float64)
        if weights.shape != (2 * len(experts),):
            raise ValueError(f"stacker weights of shape {weights.shape} for {len(experts)} experts")
        return cls(experts=experts, heads=heads, weights=weights, bias=float(config["bias"]),
                   l2=float(config.get("l2", 1.0)))
