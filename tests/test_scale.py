"""Scale-out: the same ScoreBatch / EmbedBatch on the local engine and on a local Ray
(2 CPUs, 1 and 2 workers) give the same scores and features; outputs are interchangeable with the
feature cache; a job killed mid-run (after a worker died and was retried) completes on a re-run
with every input exactly once and the finished part files untouched."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("pyarrow")
from typer.testing import CliRunner  # noqa: E402

from fakescope.cli import EXIT_SOME_FAILED, EXIT_USAGE, app  # noqa: E402
from fakescope.scale.inputs import enumerate_inputs, inputs_digest, plan_shards  # noqa: E402
from fakescope.scale.outputs import feature_matrix, read_parts  # noqa: E402

pytestmark = [pytest.mark.offline_models, pytest.mark.usefixtures("one_thread")]
N_GOOD = 11          # + 1 broken file = 12 images in the folder
N_TAR = 6            # + a WebDataset shard of 6 more (read by offset on the workers)
MODEL = "effnet-v2"  # the small shipped detector: these tests are about the engines, not the model


def _effnet_or_skip():
    try:
        from fakescope.backbones import load_backbone
        load_backbone("effnet-lite0")
    except Exception as e:  # the [offline] extra is missing
        pytest.skip(f"effnet-lite0 unavailable: {e}")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    _effnet_or_skip()
    root = tmp_path_factory.mktemp("scale")
    imgs = root / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(8)
    for i in range(N_GOOD):
        h, w = int(rng.integers(40, 90)), int(rng.integers(40, 90))
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        a = rng.random((3,))
        img = (np.clip(a * xx[..., None] + (1 - a) * yy[..., None] + rng.normal(0, 0.1 * (i % 3), (h, w, 3)), 0, 1)
               * 255).astype(np.uint8)
        Image.fromarray(img).save(imgs / f"img{i:02d}.{'png' if i % 2 else 'jpg'}")
    (imgs / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    shard = root / "shard-000.tar"
    with tarfile.open(shard, "w") as tar:
        for i in range(N_TAR):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
            for ext, payload in (("jpg", buf.getvalue()), ("cls", str(i % 2).encode())):
                info = tarfile.TarInfo(f"s/{i:04d}.{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return root


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def inputs_of(root: Path) -> list[str]:
    return [str(root / "imgs"), str(root / "shard-000.tar")]


@pytest.fixture(scope="module")
def local_scan(data):
    """The local engine's Parquet scan of all inputs (the reference for Ray)."""
    out = data / "scan-local"
    res = run("scan", *inputs_of(data), "--model", MODEL, "--out", out, "--shard-size", 8, "--no-table")
    assert res.exit_code == EXIT_SOME_FAILED, res.output  # the broken file is a row, not a crash
    return read_parts(out).to_pylist()


def parsed(rows: list[dict]) -> list[dict]:
    """Parquet rows as the JSON lines hold them: provenance (and video, on video rows only; experts, on a
    fused detector's rows only) parsed from JSON text."""
    out = []
    for r in rows:
        r = dict(r)
        r["provenance"] = json.loads(r["provenance"]) if r["provenance"] else None
        for optional in ("video", "experts"):
            value = r.pop(optional, None)
            if value:
                r[optional] = json.loads(value)
        out.append(r)
    return out


# ---------------------------------------------------------------- no Ray needed
def test_core_import_does_not_import_ray():
    code = ("import sys, fakescope, fakescope.cli, fakescope.scale.jobs, fakescope.scale.batch, "
            "fakescope.scale.commands, fakescope.scale.outputs, fakescope.scale.engines; "
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_inputs_name_rows_like_load_labelled(data):
    from fakescope.data.sources import load_labelled
    from fakescope.scale.batch import read_member
    from fakescope.images import DEFAULT_LIMITS

    inp = enumerate_inputs(inputs_of(data))
    assert len(inp) == N_GOOD + 1 + N_TAR
    labelled = list(load_labelled(str(data / "shard-000.tar")))
    tar_rows = [i for i, p in enumerate(inp.paths) if "::" in p]
    assert [inp.paths[i] for i in tar_rows] == [s.path for s in labelled]
    for i, s in zip(tar_rows, labelled):  # workers read the member by offset: the same bytes
        assert read_member(inp.cols["tar"][i], inp.cols["offset"][i], inp.cols["size"][i], DEFAULT_LIMITS, "") == s.data
        assert inp.cols["label"][i] == s.label
    # stable shard ids: same inputs, same ids; other inputs, other ids
    d = inputs_digest(inp)
    assert [s.id for s in plan_shards(len(inp), 8, d)] == [s.id for s in plan_shards(len(inp), 8, d)]
    assert plan_shards(len(inp), 8, d)[0].id != plan_shards(len(inp), 8, inputs_digest(inp.take([1, 0])))[0].id


def test_local_scan_parquet_equals_jsonl_and_api(data, local_scan):
    from fakescope.detector import load_detector

    out = data / "scan.jsonl"
    res = run("scan", *inputs_of(data), "--model", MODEL, "--out", out, "--no-table")
    assert res.exit_code == EXIT_SOME_FAILED, res.output
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert recs == parsed(local_scan)  # same records, same order, one writer for both formats
    assert len(recs) == N_GOOD + 1 + N_TAR and job(data / "scan-local")["n_shards"] == 3
    broken = [r for r in recs if r["error"]]
    assert [r["path"] for r in broken] == [str(data / "imgs" / "zz_broken.jpg")] and broken[0]["score"] is None
    files = [r["path"] for r in recs if "::" not in r["path"]]
    api = {r.path: r.score for r in load_detector(MODEL).predict(files)}
    for r in recs:
        if r["path"] in api and r["error"] is None:
            assert r["score"] == pytest.approx(api[r["path"]], abs=1e-6)


def job(out: Path) -> dict:
    return json.loads((out / "job.json").read_text())


def test_parquet_job_refuses_other_inputs_and_skips_complete_shards(data, local_scan):
    out = data / "scan-local"
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    res = run("scan", *inputs_of(data), "--model", MODEL, "--out", out, "--shard-size", 8, "--no-table")
    assert res.exit_code == EXIT_SOME_FAILED and "resuming: 3 of 3 shards" in res.output
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")} == before
    res = run("scan", str(data / "imgs"), "--model", MODEL, "--out", out, "--shard-size", 8, "--no-table")
    assert res.exit_code == EXIT_USAGE and "another job" in res.output


def test_one_driver_per_output_folder(tmp_path):
    from fakescope.scale.outputs import JobMismatch, PartStore

    job = {"kind": "scan", "inputs_sha256": "x", "n_inputs": 1, "shard_size": 1, "n_shards": 1, "config": {}}
    with PartStore(tmp_path / "o", job):
        with pytest.raises(JobMismatch, match="another running job"):
            PartStore(tmp_path / "o", job).open()
    PartStore(tmp_path / "o", job).open().close()  # free again once the first one is done
    with pytest.raises(JobMismatch, match="another job"):
        PartStore(tmp_path / "o", {**job, "n_inputs": 2}).open()


def test_local_features_fill_the_feature_cache(data):
    from fakescope.backbones import load_backbone
    from fakescope.data.samples import Sample
    from fakescope.features import FeatureCache, extract

    out, cache = data / "feat-local", data / "cache-local"
    res = run("features", *inputs_of(data), "--out", out, "--cache", cache, "--shard-size", 8)
    assert res.exit_code == EXIT_SOME_FAILED, res.output
    table = read_parts(out)
    X = feature_matrix(table)
    paths, errors = table.column("path").to_pylist(), table.column("error").to_pylist()
    assert X.shape == (N_GOOD + 1 + N_TAR, 1280) and sum(e is not None for e in errors) == 1
    assert json.loads((out / "manifest.json").read_text())["spec"]["name"] == "effnet-lite0"

    bb = load_backbone("effnet-lite0")
    calls = []

    class Counting:
        spec = bb.spec
        batch_size = 4

        def forward(self, x, want_patches=False):
            calls.append(len(x))
            return bb.forward(x, want_patches)

    good = [i for i, e in enumerate(errors) if e is None and "::" not in paths[i]]
    rows, Y, errs = extract([Sample(path=paths[i]) for i in good], Counting(), cache=FeatureCache(cache, bb.spec))
    assert calls == [] and errs == []  # every image a cache hit
    np.testing.assert_array_equal(Y, X[good])
    # and the features are what extract computes itself (no cache)
    _, Z, _ = extract([Sample(path=paths[i]) for i in good], bb, cache=None)
    np.testing.assert_allclose(Z, X[good], atol=1e-5)


@pytest.mark.parametrize("kind", ["score", "embed"])
def test_a_call_decodes_ahead_in_chunks_and_equals_one_pass(data, kind):
    """What Ray calls: the batch cut into forward-sized chunks, decoding overlapped with the model,
    gives row for row what one prepare + finish over the whole batch gives."""
    from fakescope.scale.batch import EmbedBatch, ScoreBatch

    files = sorted(str(f) for f in (data / "imgs").iterdir())
    batch = {"path": np.array(files, dtype=object), "shard": np.full(len(files), 7),
             "pos": np.arange(len(files))}

    class Counting(ScoreBatch if kind == "score" else EmbedBatch):
        prepared: list = []

        def prepare(self, b):
            self.prepared.append(len(b["path"]))
            return super().prepare(b)

    fn = Counting(batch_size=5, decode_workers=2, **({"model": MODEL} if kind == "score" else {}))
    whole = fn.finish(fn.prepare(batch))
    fn.prepared.clear()
    chunked = fn(batch)
    assert fn.prepared == [5, 5, 2]  # 12 rows, forward size 5
    assert chunked.keys() == whole.keys()
    for k, v in whole.items():
        if v.dtype == object:
            assert list(chunked[k]) == list(v), k
        else:
            np.testing.assert_allclose(chunked[k], v, atol=1e-6, err_msg=k)
    assert sum(e is not None for e in chunked["error"]) == 1


def test_an_image_the_backbone_fails_on_is_one_error_in_its_batch(data):
    """A worker's batch keeps every row: the image the model cannot take gets "forward_failed", the
    others the features they get without it."""
    from fakescope.scale.batch import EmbedBatch

    files = sorted(str(f) for f in (data / "imgs").iterdir())
    batch = {"path": np.array(files, dtype=object), "shard": np.full(len(files), 7), "pos": np.arange(len(files))}
    fn = EmbedBatch(batch_size=4, decode_workers=1)
    want = fn(batch)
    real = fn.backbone

    class Picky:  # cannot take an input whose first pixel is the poison image's
        spec = real.spec

        def forward(self, x, want_patches=False):
            if any(np.array_equal(a[:, 0, 0], poison) for a in x):
                raise RuntimeError("cannot take this input")
            return real.forward(x, want_patches)

    items = fn.prepare({k: v[3:4] for k, v in batch.items()})[1]
    poison = items[0].array[:, 0, 0]
    fn._backbone = Picky()
    got = fn(batch)
    assert got["error"][3] == "forward_failed: RuntimeError: cannot take this input" and np.isnan(got["feature"][3]).all()
    others = [i for i in range(len(files)) if i != 3 and want["error"][i] is None]
    np.testing.assert_allclose(got["feature"][others], want["feature"][others], atol=1e-6)
    assert [got["error"][i] for i in range(len(files)) if i != 3] == [want["error"][i] for i in range(len(files)) if i != 3]


# ---------------------------------------------------------------- Ray (2 CPUs)
@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _compare_scans(a: list[dict], b: list[dict]) -> float:
    assert [r["path"] for r in a] == [r["path"] for r in b]
    worst = 0.0
    for x, y in zip(a, b):
        assert (x["sha256"], x["error"], x["model"], x["threshold"]) == (y["sha256"], y["error"], y["model"], y["threshold"])
        if x["error"] is None:
            worst = max(worst, abs(x["score"] - y["score"]))
            assert x["label"] == y["label"]
    assert worst < 1e-5
    return worst


@pytest.mark.slow
@pytest.mark.parametrize("workers", [2])  # 1 worker: the killed-job test below
def test_ray_scan_equals_local(data, local_scan, ray_cluster, workers):
    out = data / f"scan-ray{workers}"
    res = run("scan", *inputs_of(data), "--model", MODEL, "--engine", "ray", "--workers", workers, "--out", out,
              "--shard-size", 8, "--no-table")
    assert res.exit_code == EXIT_SOME_FAILED, res.output
    _compare_scans(local_scan, read_parts(out).to_pylist())
    assert {k: v for k, v in job(out).items() if k != "fakescope"} == \
        {k: v for k, v in job(data / "scan-local").items() if k != "fakescope"}  # interchangeable folders


@pytest.mark.slow
def test_ray_features_equal_local_and_fill_the_cache(data, ray_cluster):
    from fakescope.backbones import parse_spec
    from fakescope.features import FeatureCache

    out, cache = data / "feat-ray", data / "cache-ray"
    res = run("features", *inputs_of(data), "--engine", "ray", "--workers", 2, "--out", out, "--cache", cache,
              "--shard-size", 8)
    assert res.exit_code == EXIT_SOME_FAILED, res.output
    if not (data / "feat-local").exists():
        assert run("features", *inputs_of(data), "--out", data / "feat-local", "--no-cache", "--shard-size", 8).exit_code == 3
    a, b = read_parts(data / "feat-local"), read_parts(out)
    assert a.column("path").to_pylist() == b.column("path").to_pylist()
    assert a.column("error").to_pylist() == b.column("error").to_pylist()
    np.testing.assert_allclose(feature_matrix(a), feature_matrix(b), atol=1e-5)  # NaN rows (errors) compare equal
    fc = FeatureCache(cache, parse_spec("effnet-lite0"))
    shas = [s for s, e in zip(b.column("sha256").to_pylist(), b.column("error").to_pylist()) if e is None]
    assert all(s in fc for s in shas)
    np.testing.assert_array_equal(fc.get(shas), feature_matrix(b)[[e is None for e in b.column("error").to_pylist()]])


KILLED_JOB = textwrap.dedent("""
    import os, sys, time
    import ray
    from fakescope.scale.batch import ScoreBatch
    from fakescope.scale.engines import EngineOptions
    from fakescope.scale.inputs import enumerate_inputs
    from fakescope.scale.jobs import scan_job

    MARKER = sys.argv[3]

    class DyingScoreBatch(ScoreBatch):
        # Dies (the whole worker process) on its first call, once per test: Ray must restart the
        # actor and retry the batch. Then slow, so the driver can be killed mid-job.
        def __call__(self, batch):
            if not os.path.exists(MARKER):
                open(MARKER, "w").close()
                os._exit(1)
            time.sleep(0.3)
            return super().__call__(batch)

    ray.init(address=sys.argv[1], logging_level="ERROR")
    scan_job(enumerate_inputs(sys.argv[4:]), sys.argv[2], "effnet-v2", opts=EngineOptions(engine="ray", workers=1,
             rows_per_call=4), shard_size=4, fn_cls=DyingScoreBatch)
    print("finished")
""")


@pytest.mark.slow
def test_ray_killed_then_rerun_completes_without_duplicates(data, local_scan, ray_cluster, tmp_path):
    from fakescope.scale.engines import EngineOptions
    from fakescope.scale.jobs import scan_job

    out, marker = tmp_path / "killed", tmp_path / "died-once"
    script = tmp_path / "job.py"
    script.write_text(KILLED_JOB)
    n_shards = -(-len(local_scan) // 4)
    proc = subprocess.Popen([sys.executable, str(script), ray_cluster, str(out), str(marker), *inputs_of(data)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 240  # generous: a busy machine starts Ray actors slowly (90 s was not enough)
        while time.time() < deadline and proc.poll() is None and not list(out.glob("part-*.parquet")):
            time.sleep(0.1)
        parts = sorted(out.glob("part-*.parquet"))
        assert parts, proc.communicate(timeout=5)[0].decode()[-3000:] if proc.poll() is not None else "no part in 240 s"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver dies mid-job
        proc.wait(timeout=30)
    assert marker.exists()  # a worker died before any part existed: Ray restarted it and retried its batch
    first = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in parts}
    assert 0 < len(first) < n_shards, "the job finished before it could be killed"

    res = scan_job(enumerate_inputs(inputs_of(data)), out, MODEL, opts=EngineOptions(engine="ray", workers=2,
                   rows_per_call=4), shard_size=4)
    assert set(res.skipped) >= {int(n[5:10]) for n in first} and len(res.skipped) + len(res.written) == n_shards
    assert not set(res.skipped) & set(res.written)
    for p in out.glob("part-*.parquet"):  # finished parts were not rewritten
        if p.name in first:
            assert (p.stat().st_ino, p.stat().st_mtime_ns) == first[p.name]
    assert not list(out.glob(".*tmp"))
    rows = read_parts(out).to_pylist()
    assert sorted(r["path"] for r in rows) == sorted(r["path"] for r in local_scan)  # each input exactly once
    _compare_scans(local_scan, rows)
