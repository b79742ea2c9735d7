"""Leave-one-generator-out for any `fakescope train` method, including code / natural-traces.

The protocol of benchmarks/methods.py (docs/results.md section 2), so the numbers sit beside
the frozen-feature probes: for each generator g of the test source, train on all --data
(after the usual hashed 15% hold-out) without g's images; test the held-out reals of the test
source against the held-out images of g; the threshold is the model's own (5% FPR on the
held-out reals of the test source).

    python -m fakescope.training.leave_out --data cifake/train.tar --data wild/train.tar --per-class 2000 \\
        --test-source wild/train.tar --method code --set encoder=adapter:effnet-lite0 --report logo.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def leave_one_generator_out(data, test_source, method, options, per_class=None, cache=None, seed=0, log=print) -> dict:
    from ..data.samples import FAKE, REAL
    from ..evaluation.report import evaluate_detector, public
    from ..train import TrainConfig, fit_detector, load_sources, split_by_image

    samples = load_sources(data, per_class, seed)
    held = split_by_image(samples, 0.15, seed)
    test_source = str(test_source)
    gens = sorted({s.generator for s in samples if s.label == FAKE and s.generator and s.source == test_source})
    if len(gens) < 2:
        raise ValueError(f"{test_source}: needs fakes of at least two named generators (found {gens})")
    out: dict = {"data": list(map(str, data)), "test_source": test_source, "method": method, "options": options,
                 "per_generator": {}}
    for g in gens:
        t0 = time.time()
        train = [s for s in samples if not (s.label == FAKE and s.generator == g)]
        cfg = TrainConfig(data=list(map(str, data)), method=method, per_class=per_class, seed=seed, cache=cache,
                          calibrate_on=[test_source], head_options={**options, "run_dir": None})
        det = fit_detector(cfg, train, log=log)
        test = [s for s, h in zip(samples, held) if h and s.source == test_source
                and (s.label == REAL or s.generator == g)]
        m = public(evaluate_detector(det, test, cache))
        keep = {k: m.get(k) for k in ("n", "n_real", "n_fake", "auc", "ap", "accuracy", "acc_real", "acc_fake",
                                      "tpr_at_5fpr")}
        keep["seconds"] = round(time.time() - t0, 1)
        out["per_generator"][g] = keep
        log(f"without {g}: AUC {keep['auc']:.4f} AP {keep['ap']:.4f} acc {keep['accuracy']:.4f} "
            f"({keep['n_real']} reals vs {keep['n_fake']} {g}; {keep['seconds']} s)")
    out["mean_auc"] = float(np.mean([v["auc"] for v in out["per_generator"].values()]))
    out["mean_ap"] = float(np.mean([v["ap"] for v in out["per_generator"].values()]))
    return out


def main(argv=None) -> None:
    from .options import parse_options
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", action="append", required=True)
    ap.add_argument("--test-source", required=True, help="the --data source whose generators are left out in turn")
    ap.add_argument("--method", default="code")
    ap.add_argument("--set", action="append", default=[], dest="options", help="KEY=VALUE as for fakescope train")
    ap.add_argument("--per-class", type=int, default=None)
    ap.add_argument("--cache", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--report", default=None)
    a = ap.parse_args(argv)
    res = leave_one_generator_out(a.data, a.test_source, a.method, parse_options(a.options), a.per_class, a.cache,
                                  a.seed, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps({g: round(v["auc"], 4) for g, v in res["per_generator"].items()} | {"mean_auc": round(res["mean_auc"], 4)}))
    if a.report:
        with open(a.report, "w") as f:
            json.dump(res, f, indent=1, default=float)


if __name__ == "__main__":
    main()
