"""Semantic vs low-level disentanglement of a frozen image embedding ("Parents and Children").

"Parents and Children: Distinguishing Multimodal DeepFakes from Natural Images"
(Amoroso et al., COCOFake) asks how much of what a detector reads in a frozen
embedding is *content* (what the caption describes) and how much is *low-level*
(traces of how the pixels were made). This head answers it with two projections of
the standardised image features x:

    semantic  P_s(x) in R^k  aligned with Q(t), a projection of the caption embedding t
                             of the same row: symmetric InfoNCE, batch negatives
                             (CLIP-style, learnable temperature starting at 0.07);
    low-level P_l(x) in R^k  organised by real/fake: supervised contrastive loss
                             (SupCon, temperature 0.1);

plus a decorrelation penalty, the squared cross-correlation between the
batch-standardised P_s(x) and P_l(x), so the two carry different information.
The penalty is fakescope's, not the paper's: it pushes the real/fake signal out of the
semantic branch by construction (`ortho_weight=0` drops it). `pair_positives=True` uses the
families the data has instead (COCOFake: a real photo and the fakes generated from its
captions; CocoGlide: a photo and its inpainted edit; `Sample.group`): a family is kept in one
batch, its members' captions are all positives of each of its images in the InfoNCE, and its
images' semantic projections are positives of each other (SupCon over families, temperature
`supcon_temperature`). Parent and child depict the same content and differ in how they were
made, so this asks the semantic branch to ignore the difference, without a penalty.
Both are trained jointly with AdamW, then frozen; three logistic probes (`LinearProbe`)
read the semantic embedding, the low-level embedding, and both. `analysis(X, y)`
reports each probe's ROC-AUC and accuracy: the share of the detection signal that is
semantic vs low-level. `predict(X)` uses the probe on both and needs no text.
Embeddings are the L2-normalised projections (the space the contrastive losses shape).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .registry import register
from .contrastive import info_nce, supcon_loss
from .linear import LinearProbe
from .multilayer import group_holdout

HOLDOUT_FRACTION = 0.15
PROBES = ("sem", "low", "both")
ANALYSIS_NAMES = {"sem": "semantic", "low": "low_level", "both": "both"}


def _mlp(d_in: int, hidden: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, k))


def cross_correlation_penalty(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """How much of b's variance the columns of a can each explain, summed over a's columns.

    a is standardised per column, b is centred and scaled to unit *total* variance:

        penalty = sum_ij cov(a_i, b_j)^2 / sum_j var(b_j)

    If b is dominated by one direction u (a SupCon embedding of two classes collapses
    onto the real/fake axis), this is sum_i corr(a_i, b.u)^2: zero means no column of a,
    hence no linear read-out of a, follows what b encodes. Weighting b's columns by
    their variance rather than standardising each one keeps b's near-constant noise
    columns from drowning that signal (with per-column standardisation the penalty is
    mostly batch noise once k is large). Its floor on independent data is ~ k / batch.
    """
    a = (a - a.mean(0)) / (a.std(0) + 1e-5)
    b = b - b.mean(0)
    c = a.T @ b / a.shape[0]
    return (c * c).sum() / (b.pow(2).mean(0).sum() + 1e-8)


class _Nets(nn.Module):
    def __init__(self, dim: int, text_dim: int, k: int, hidden: int, temperature: float):
        super().__init__()
        self.sem = _mlp(dim, hidden, k)
        self.low = _mlp(dim, hidden, k)
        self.txt = _mlp(text_dim, hidden, k)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature), dtype=torch.float32))

    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp().clamp(min=0.01)  # CLIP caps the logit scale at 100

    def embed(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.normalize(self.sem(z), dim=1), F.normalize(self.low(z), dim=1)


@register
class DisentangleProbe:
    method = "disentangle"
    reads_text = True  # fit(X, y, groups, text=caption embeddings)

    def __init__(self, k: int = 128, hidden: int = 256, epochs: int = 30, lr: float = 1e-3, weight_decay: float = 1e-4,
                 batch_size: int = 256, temperature: float = 0.07, learn_temperature: bool = True,
                 supcon_temperature: float = 0.1, ortho_weight: float = 0.1, probe_l2: float | None = None,
                 pair_positives: bool = False, seed: int = 0):
        self.k, self.hidden, self.epochs, self.lr = int(k), int(hidden), int(epochs), float(lr)
        self.weight_decay, self.batch_size = float(weight_decay), int(batch_size)
        self.temperature, self.learn_temperature = float(temperature), bool(learn_temperature)
        self.supcon_temperature, self.ortho_weight = float(supcon_temperature), float(ortho_weight)
        self.probe_l2 = None if probe_l2 is None else float(probe_l2)
        self.pair_positives = bool(pair_positives)
        self.seed = int(seed)
        self.dim = self.text_dim = None
        self.mean = self.std = self.text_mean = self.text_std = None
        self.nets: _Nets | None = None
        self.probes: dict[str, LinearProbe] = {}

    # ------------------------------------------------------------ training
    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None,
            text: np.ndarray | None = None) -> dict:
        if text is None:
            raise ValueError("the disentangle head needs caption embeddings (`text=`, one row per image): the "
                             "training data needs captions and a text encoder to embed them")
        X = np.asarray(X, np.float32)
        text = np.asarray(text, np.float32)
        y = np.asarray(y, np.float32).reshape(-1)
        if text.ndim != 2 or text.shape[0] != X.shape[0]:
            raise ValueError(f"text must be (N, Dt) aligned with X's {X.shape[0]} rows, got shape {text.shape}")
        if len(np.unique(y)) < 2:
            raise ValueError("the disentangle head needs both real (0) and fake (1) samples")
        groups = np.arange(len(y)) if groups is None else np.asarray(groups)
        held = group_holdout(y, groups, HOLDOUT_FRACTION, self.seed)
        tr = np.flatnonzero(~held) if held is not None else np.arange(len(y))

        self.dim, self.text_dim = int(X.shape[1]), int(text.shape[1])
        self.mean, self.std = X[tr].mean(0), X[tr].std(0) + 1e-6
        self.text_mean, self.text_std = text[tr].mean(0), text[tr].std(0) + 1e-6
        Z = torch.from_numpy((X - self.mean) / self.std)
        T = torch.from_numpy((text - self.text_mean) / self.text_std)
        labels = torch.from_numpy(y.astype(np.int64))
        family = np.unique(groups, return_inverse=True)[1].reshape(-1)
        families = torch.from_numpy(family.astype(np.int64))
        n_pairs = int((np.bincount(family[tr]) > 1).sum())

        rng = np.random.default_rng(self.seed)
        losses = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            nets = _Nets(self.dim, self.text_dim, self.k, self.hidden, self.temperature)
            nets.log_temperature.requires_grad_(self.learn_temperature)
            params = [p for n, p in nets.named_parameters() if n != "log_temperature"]
            param_groups = [{"params": params}]
            if self.learn_temperature:
                param_groups.append({"params": [nets.log_temperature], "weight_decay": 0.0})
            opt = torch.optim.AdamW(param_groups, lr=self.lr, weight_decay=self.weight_decay)
            nets.train()
            for _ in range(self.epochs):
                if self.pair_positives:
                    batches = _family_batches(tr, family, self.batch_size, rng)
                else:
                    batches = _batches(tr[rng.permutation(len(tr))], self.batch_size)
                total, n_batches = np.zeros(3), 0
                for idx in batches:
                    idx = torch.from_numpy(idx)
                    es, el = nets.embed(Z[idx])
                    if self.pair_positives:
                        fam = families[idx]
                        l_sem = (info_nce(es, nets.txt(T[idx]), nets.temperature(), groups=fam)
                                 + supcon_loss(es, fam, self.supcon_temperature))
                    else:
                        l_sem = info_nce(es, nets.txt(T[idx]), nets.temperature())
                    l_low = supcon_loss(el, labels[idx], self.supcon_temperature)
                    l_ort = cross_correlation_penalty(es, el)
                    loss = l_sem + l_low + self.ortho_weight * l_ort
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total += [l_sem.item(), l_low.item(), l_ort.item()]
                    n_batches += 1
                losses.append(total / max(1, n_batches))
        nets.eval()
        for p in nets.parameters():
            p.requires_grad_(False)
        self.nets = nets

        emb = self._embeddings(X)
        info: dict = {"last_epoch_losses": ({name: round(float(v), 4) for name, v in
                                             zip(("info_nce", "supcon", "decorrelation"), losses[-1])}
                                            if losses else {}),
                      "temperature": round(float(nets.temperature()), 5), "probes": {},
                      "families_in_training": n_pairs}
        if self.pair_positives and not n_pairs:
            info["note_pairs"] = "pair_positives: no family of two or more training images; plain InfoNCE"
        for name in PROBES:
            probe = LinearProbe(l2=self.probe_l2, seed=self.seed)
            info["probes"][name] = probe.fit(emb[name][tr], y[tr], groups[tr])
            self.probes[name] = probe
        if held is not None:
            info["heldout_analysis"] = self.analysis(X[held], y[held])
            info["heldout_n"] = int(held.sum())
        else:
            info["note"] = "no group-disjoint held-out split with both classes: no held-out analysis"
        return info

    # ------------------------------------------------------------ inference
    def _embeddings(self, X: np.ndarray) -> dict[str, np.ndarray]:
        X = np.asarray(X, np.float32)
        if X.ndim == 1:
            X = X[None]
        Z = torch.from_numpy((X - self.mean) / self.std)
        sem, low = [], []
        with torch.no_grad():
            for i in range(0, len(Z), 4096):
                es, el = self.nets.embed(Z[i:i + 4096])
                sem.append(es.numpy())
                low.append(el.numpy())
        sem_a = np.concatenate(sem) if sem else np.zeros((0, self.k), np.float32)
        low_a = np.concatenate(low) if low else np.zeros((0, self.k), np.float32)
        return {"sem": sem_a, "low": low_a, "both": np.concatenate([sem_a, low_a], axis=1)}

    def embed(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(semantic, low-level) L2-normalised embeddings of image features X."""
        e = self._embeddings(X)
        return e["sem"], e["low"]

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.probes["both"].predict(self._embeddings(X)["both"])

    def analysis(self, X: np.ndarray, y: np.ndarray) -> dict:
        """ROC-AUC and accuracy (threshold 0.5) of the semantic, low-level and combined probes on (X, y)."""
        from ..evaluation.metrics import accuracy, roc_auc
        y = np.asarray(y).astype(int).reshape(-1)
        emb = self._embeddings(X)
        out = {}
        for name in PROBES:
            s = self.probes[name].predict(emb[name])
            out[ANALYSIS_NAMES[name]] = {"auc": roc_auc(y, s), "accuracy": accuracy(y, s, 0.5)}
        return out

    # ------------------------------------------------------------ persistence
    def config(self) -> dict:
        return {"k": self.k, "hidden": self.hidden, "epochs": self.epochs, "lr": self.lr,
                "weight_decay": self.weight_decay, "batch_size": self.batch_size, "temperature": self.temperature,
                "learn_temperature": self.learn_temperature, "supcon_temperature": self.supcon_temperature,
                "ortho_weight": self.ortho_weight, "probe_l2": self.probe_l2,
                "pair_positives": self.pair_positives, "seed": self.seed,
                "dim": self.dim, "text_dim": self.text_dim,
                "probes": {name: p.config() for name, p in self.probes.items()}}

    def state(self) -> dict[str, np.ndarray]:
        out = {k: v.detach().numpy().astype(np.float32) for k, v in self.nets.state_dict().items()}
        out.update({"mean": self.mean, "std": self.std, "text_mean": self.text_mean, "text_std": self.text_std})
        for name, probe in self.probes.items():
            out.update({f"probe_{name}.{k}": v for k, v in probe.state().items()})
        return {k: np.asarray(v, np.float32) for k, v in out.items()}

    @classmethod
    def from_state(cls, config: dict, state: dict[str, np.ndarray]) -> "DisentangleProbe":
        cfg = {k: v for k, v in config.items() if k not in ("dim", "text_dim", "probes")}
        head = cls(**cfg)
        head.dim, head.text_dim = int(config["dim"]), int(config["text_dim"])
        for key in ("mean", "std", "text_mean", "text_std"):
            setattr(head, key, np.asarray(state[key], np.float32))
        head.nets = _Nets(head.dim, head.text_dim, head.k, head.hidden, head.temperature)
        head.nets.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()
                                   if k.split(".")[0] in ("sem", "low", "txt", "log_temperature")})
        head.nets.eval()
        for name in PROBES:
            prefix = f"probe_{name}."
            head.probes[name] = LinearProbe.from_state(
                config["probes"][name], {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        return head


def _family_batches(rows: np.ndarray, family: np.ndarray, size: int, rng: np.random.Generator):
    """Minibatches of `rows` in a random order of families, each family's rows together: a batch
    takes whole families until it holds `size` rows (a family larger than that is a batch alone)."""
    members: dict[int, list[int]] = {}
    for r in rows:
        members.setdefault(int(family[r]), []).append(int(r))
    keys = list(members)
    batch: list[int] = []
    out = []
    for k in (keys[i] for i in rng.permutation(len(keys))):
        if batch and len(batch) + len(members[k]) > size:
            out.append(np.array(batch))
            batch = []
        batch += members[k]
    if batch:
        out.append(np.array(batch))
    if len(out) > 1 and len(out[-1]) < 2:  # contrastive losses and batch statistics need pairs
        out[-2] = np.concatenate(out[-2:])
        out.pop()
    return [b for b in out if len(b) >= 2]


def _batches(order: np.ndarray, size: int):
    """Minibatches of `order`; a last batch of fewer than 2 samples joins the previous one
    (contrastive losses and batch statistics need pairs)."""
    cuts = list(range(0, len(order), size))
    if len(cuts) > 1 and len(order) - cuts[-1] < 2:
        cuts.pop()
    for i, start in enumerate(cuts):
        end = cuts[i + 1] if i + 1 < len(cuts) else len(order)
        if end - start >= 2:
            yield order[start:end]

