""""Uncertain" when two recipes disagree: placed on the per-image fold scores of `fakescope validate --scores` (issue 17).

A (the default's recipe, with its own "uncertain" rule) answers an image only if B (another recipe,
fitted on the very same folds) gives the same verdict at B's threshold; otherwise the image is
"uncertain: the experts disagree". A second column drops A's score band (its "near threshold"
reason) and keeps its "unfamiliar" one: disagreement in place of the band. Every fold both files hold (a held-out source, a device fold),
images matched by path: coverage and accuracy on the answered images, and for real-only folds the
share called fake. A screen on saved scores, not the protocol: results.md 11.11.

    python benchmarks/core_problem/disagreement.py runs/band/v6-collections.npz runs/band/v7cand-native-only-collections.npz

With one file (a fused detector with a referee, whose own reasons include "experts disagree"): each
fold as run, and with the score band off (an image "near threshold" answered; "unfamiliar" and the
referee's objection kept): results.md 11.12. A referee's veto (its "real" answered above the
threshold, results.md 11.14) counts as the answer it gave.

    python benchmarks/core_problem/disagreement.py runs/band/s8-referee-400-collections.npz
"""
from __future__ import annotations

import sys

import numpy as np


def fold(d, name: str) -> dict[tuple[str, int], tuple[int, float, bool, bool]]:
    """(path, its n-th occurrence) -> (label, score, answered by the recipe's own rule, left
    unanswered by its score band alone) in fold `name` (an archive may hold one name twice)."""
    out, seen = {}, {}
    for p, y, s, r in zip(d[f"{name}/paths"], d[f"{name}/labels"], d[f"{name}/scores"], d[f"{name}/reasons"]):
        seen[p] = seen.get(p, -1) + 1
        out[(str(p), seen[p])] = (int(y), float(s), not r, str(r).startswith("near threshold"))
    return out


def rates(y: np.ndarray, fake: np.ndarray, answered: np.ndarray) -> str:
    cov = answered.mean()
    acc = (fake[answered] == (y[answered] == 1)).mean() if answered.any() else float("nan")
    called = (fake & answered).sum() / len(y)
    return f"{cov:6.3f} {acc:6.3f} {called:6.3f}"


def band_off(path: str) -> None:
    d = np.load(path)
    print("fold".ljust(16) + "  as run: answered / acc. / called fake      score band off"
          "              one-sided referee (stops 'fake' only), with and without the band")
    for name in sorted({k.split("/")[0] for k in d.files}):
        y, s, t = d[f"{name}/labels"].astype(int), d[f"{name}/scores"], float(d[f"{name}/threshold"])
        reasons = [str(r) for r in d[f"{name}/reasons"]]
        fake = s >= t
        if f"{name}/verdicts" in d.files:  # a referee's veto answered "real" above the threshold
            fake &= d[f"{name}/verdicts"] != "real"
        answered = np.array([not r for r in reasons])
        no_band = np.array([not r or r.startswith("near threshold") for r in reasons])
        line = f"{name:<16}  {rates(y, fake, answered)}           {rates(y, fake, no_band)}"
        referees = [k.split("/", 1)[1][4:] for k in d.files if k.startswith(f"{name}/cut.")]
        if referees:  # one-sided: the referee may only stop a "fake" verdict (a camera photo's protection)
            p, cut = d[f"{name}/expert.{referees[0]}"], float(d[f"{name}/cut.{referees[0]}"])
            low, high = d[f"{name}/band"]
            unfamiliar = np.array([r.startswith("unfamiliar") for r in reasons])
            near = (s >= low) & (s < high)
            said = s >= t
            veto = d[f"{name}/veto.{referees[0]}"] if f"{name}/veto.{referees[0]}" in d.files else -np.inf
            vetoed = said & (p < veto)  # answered "real" (NaN never vetoes)
            stopped = said & (p < cut) & ~vetoed  # NaN (no referee for the image) never stops
            line += f"           {rates(y, said & ~vetoed, ~unfamiliar & (vetoed | ~near & ~stopped))}"
            line += f"   band off: {rates(y, said & ~vetoed, ~unfamiliar & ~stopped)}"
        print(line + f"   (n {len(y)}, fakes {int(y.sum())}, experts disagree on "
              f"{np.mean([r.startswith('experts disagree') for r in reasons]):.3f})")


def main() -> None:
    if len(sys.argv) == 2:
        band_off(sys.argv[1])
        return
    a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
    folds = sorted({k.split("/")[0] for k in a.files} & {k.split("/")[0] for k in b.files})
    print("fold".ljust(16) + "  A alone: answered / acc. / called fake      A unless B disagrees"
          "      the same, A's score band off")
    for name in folds:
        fa, fb = fold(a, name), fold(b, name)
        paths = [p for p in fa if p in fb]
        ta, tb = float(a[f"{name}/threshold"]), float(b[f"{name}/threshold"])
        y = np.array([fa[p][0] for p in paths])
        fake_a = np.array([fa[p][1] >= ta for p in paths])
        fake_b = np.array([fb[p][1] >= tb for p in paths])
        own = np.array([fa[p][2] for p in paths])
        unfamiliar = ~own & ~np.array([fa[p][3] for p in paths])  # A's other reason stays
        agree = fake_a == fake_b
        print(f"{name:<16}  {rates(y, fake_a, own)}           {rates(y, fake_a, own & agree)}"
              f"           {rates(y, fake_a, ~unfamiliar & agree)}   (n {len(paths)}, fakes {int(y.sum())})")


if __name__ == "__main__":
    main()
