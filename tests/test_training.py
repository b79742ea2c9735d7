"""The training engine: DDP over 2 gloo processes == 1 process on the same global batch; resume
after an interruption == an uninterrupted run; atomic checkpoints; schedule; sharding."""
from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fakescope.training import engine  # noqa: E402
from fakescope.training.code import code_objective  # noqa: E402
from fakescope.backbones.encoders import FeatureAdapter  # noqa: E402

N, D = 48, 12


class RandomViews:
    """Items drawn from the rng the engine passes: the data themselves depend on (seed, epoch, index)."""
    def __init__(self, n=N):
        self.labels = np.arange(n) % 2

    def __len__(self):
        return len(self.labels)

    def item(self, index, rng):
        base = np.full(D, 0.5 if self.labels[index] else -0.5, np.float32)
        return {"global": (base + rng.normal(0, 1, D)).astype(np.float32),
                "local": (base + rng.normal(0, 1, D)).astype(np.float32), "label": self.labels[index]}


def model():
    torch.manual_seed(0)
    return FeatureAdapter(D, hidden=16, out_dim=8)


def cfg(**kw):
    base = dict(epochs=2, batch_size=16, lr=1e-2, warmup_steps=1, seed=3, workers=0, progress=False)
    base.update(kw)
    return engine.TrainLoopConfig(**base)


def params(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, out_file):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    m = model()
    hist = engine.run(m, code_objective(0.1), RandomViews(), cfg())
    if rank == 0:
        torch.save({"params": params(m), "loss": [h["loss"] for h in hist]}, out_file)


@pytest.mark.slow
def test_ddp_two_processes_equal_one_process(tmp_path, one_thread):
    import torch.multiprocessing as mp
    single = model()
    hist = engine.run(single, code_objective(0.1), RandomViews(), cfg())
    out = tmp_path / "ddp.pt"
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    got = torch.load(out)
    assert got["loss"] == pytest.approx([h["loss"] for h in hist], rel=1e-5)
    for k, v in params(single).items():
        assert torch.allclose(got["params"][k], v, atol=1e-5, rtol=1e-4), k
    assert all(h["world_size"] == 1 for h in hist)


class Crash(RuntimeError):
    pass


def crashing(after_step):
    inner = code_objective(0.1)

    def loss_fn(m, batch, ctx):
        if ctx.step == after_step:
            raise Crash("killed")
        return inner(m, batch, ctx)
    return loss_fn


def test_resume_after_interruption_gives_the_same_weights(tmp_path, one_thread):
    ref = model()
    engine.run(ref, code_objective(0.1), RandomViews(), cfg(epochs=3))
    m = model()
    with pytest.raises(Crash):   # killed in epoch 2 (3 steps per epoch), last checkpoint at step 4
        engine.run(m, crashing(5), RandomViews(), cfg(epochs=3, out_dir=str(tmp_path), checkpoint_every=2))
    meta, _ = engine.read_checkpoint(tmp_path / engine.CHECKPOINT)
    assert (meta["epoch"], meta["step_in_epoch"], meta["global_step"]) == (1, 1, 4)
    fresh = model()               # a new process: fresh weights, everything else from the checkpoint
    logs = []
    hist = engine.run(fresh, code_objective(0.1), RandomViews(), cfg(epochs=3, out_dir=str(tmp_path), resume=True),
                      log=logs.append)
    assert any("resuming" in line for line in logs)
    for k, v in params(ref).items():
        assert torch.allclose(params(fresh)[k], v, atol=1e-6), k
    assert [h["epoch"] for h in hist] == [2, 3]
    lines = [json.loads(x) for x in (tmp_path / engine.METRICS).read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3] and lines[1]["steps_this_session"] == 2
    # a finished run resumes to nothing, and a budget (max_steps) stops with a checkpoint
    again = model()
    assert engine.run(again, code_objective(0.1), RandomViews(), cfg(epochs=3, out_dir=str(tmp_path), resume=True)) == []
    assert torch.allclose(params(again)["fc1.weight"], params(ref)["fc1.weight"], atol=1e-6)


def test_max_steps_then_resume(tmp_path, one_thread):
    ref = model()
    engine.run(ref, code_objective(0.1), RandomViews(), cfg())
    m = model()
    engine.run(m, code_objective(0.1), RandomViews(), cfg(out_dir=str(tmp_path), max_steps=2))
    assert engine.read_checkpoint(tmp_path / engine.CHECKPOINT)[0]["global_step"] == 2
    m2 = model()
    engine.run(m2, code_objective(0.1), RandomViews(), cfg(out_dir=str(tmp_path), resume=True))
    assert torch.allclose(params(m2)["fc2.weight"], params(ref)["fc2.weight"], atol=1e-6)


def test_checkpoint_of_another_configuration_is_not_resumed(tmp_path, one_thread):
    engine.run(model(), code_objective(0.1), RandomViews(), cfg(out_dir=str(tmp_path), epochs=1))
    logs = []
    hist = engine.run(model(), code_objective(0.1), RandomViews(), cfg(out_dir=str(tmp_path), epochs=1, lr=5e-3,
                                                                       resume=True), log=logs.append)
    assert len(hist) == 1 and any("different configuration" in line for line in logs)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    m = model()
    opt = torch.optim.AdamW(m.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, engine.lr_lambda(10, 0, 0.0))
    path = tmp_path / engine.CHECKPOINT
    engine.save_checkpoint(path, m, opt, sched, {"epoch": 0, "step_in_epoch": 1, "global_step": 1})
    before = path.read_bytes()
    import safetensors.torch as st

    def torn(tensors, filename, metadata=None):   # the process dies half-way through writing
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise KeyboardInterrupt
    monkeypatch.setattr(st, "save_file", torn)
    with pytest.raises(KeyboardInterrupt):
        engine.save_checkpoint(path, m, opt, sched, {"epoch": 0, "step_in_epoch": 2, "global_step": 2})
    assert path.read_bytes() == before
    assert engine.read_checkpoint(path)[0]["global_step"] == 1


def test_checkpoint_restores_optimizer_state(tmp_path, one_thread):
    m = model()
    engine.run(m, code_objective(0.1), RandomViews(), cfg(out_dir=str(tmp_path), epochs=1))
    meta, tensors = engine.read_checkpoint(tmp_path / engine.CHECKPOINT)
    assert any(k.startswith("opt.") and k.endswith("exp_avg_sq") for k in tensors)
    assert meta["scheduler"]["last_epoch"] == meta["global_step"] == 3


def test_schedule_and_sharding():
    f = engine.lr_lambda(total_steps=10, warmup=2, min_ratio=0.1)
    assert f(0) == pytest.approx(0.5) and f(1) == pytest.approx(1.0)
    assert f(2) == pytest.approx(1.0) and f(10) == pytest.approx(0.1) and f(6) < f(3)
    order = engine.epoch_order(50, seed=1, epoch=2)
    assert sorted(order.tolist()) == list(range(50)) and not np.array_equal(order, engine.epoch_order(50, 1, 3))
    B = engine.global_batch_size(50, 16, 2)
    shards = [order[s * B + r * (B // 2): s * B + (r + 1) * (B // 2)] for s in range(50 // B) for r in range(2)]
    assert np.array_equal(np.concatenate(shards), order[:(50 // B) * B])
    assert engine.global_batch_size(5, 16, 2) == 4
    with pytest.raises(ValueError):
        engine.global_batch_size(1, 16, 2)
    r1, r2 = engine.item_rng(0, 1, 7), engine.item_rng(0, 1, 7)
    assert r1.random() == r2.random()


def test_single_process_group_is_not_created_without_torchrun(monkeypatch):
    for k in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    d = engine.init_distributed()
    assert (d.rank, d.world_size, d.created) == (0, 1, False)


def test_time_budget_stops_with_a_checkpoint(tmp_path, one_thread):
    logs = []
    hist = engine.run(model(), code_objective(0.1), RandomViews(), cfg(out_dir=str(tmp_path), max_seconds=1e-9),
                      log=logs.append)
    assert hist == [] and any("budget reached" in line for line in logs)
    assert engine.read_checkpoint(tmp_path / engine.CHECKPOINT)[0]["global_step"] == 0


def test_bf16_autocast_runs_on_cpu_and_keeps_fp32_weights(one_thread):
    """The mixed-precision path (here bf16 autocast, which CPUs support): losses follow the fp32 run
    and the weights, optimizer and checkpoint stay float32."""
    full = engine.run(model(), code_objective(0.1), RandomViews(), cfg(epochs=3))
    m = model()
    mixed = engine.run(m, code_objective(0.1), RandomViews(), cfg(epochs=3, amp="bf16"))
    assert [h["loss"] for h in mixed] == pytest.approx([h["loss"] for h in full], rel=0.05)
    assert [h["loss"] for h in mixed] != [h["loss"] for h in full]  # bf16 rounding: autocast really ran
    assert mixed[-1]["loss"] < mixed[0]["loss"]
    assert all(p.dtype == torch.float32 for p in m.parameters())
    assert not torch.equal(params(m)["fc1.weight"], params(model())["fc1.weight"])


class RandomImages(RandomViews):
    def __init__(self, n, size):
        super().__init__(n)
        self.size = size

    def item(self, index, rng):
        shift = 0.3 if self.labels[index] else -0.3
        return {k: (shift + rng.normal(0, 1, (3, self.size, self.size))).astype(np.float32) for k in ("global", "local")} \
            | {"label": self.labels[index]}


def test_vit_tiny_is_code_s_vit_ti16_and_trains_at_224():
    from fakescope.backbones.encoders import VIT_PRESETS, ViT
    torch.manual_seed(0)
    vit = ViT(VIT_PRESETS["vit-tiny"])
    # ViT-Ti/16 (CoDE's encoder; timm's vit_tiny_patch16_224 without its 1000-class head):
    # 12 blocks of width 192, 3 heads, MLP 768, 196 patches + a class token
    assert sum(p.numel() for p in vit.parameters()) == 5_524_416
    before = {k: v.clone() for k, v in vit.state_dict().items()}
    hist = engine.run(vit, code_objective(0.1), RandomImages(4, 224), cfg(epochs=1, batch_size=4))
    assert len(hist) == 1 and np.isfinite(hist[0]["loss"])
    assert not torch.equal(vit.state_dict()["blocks.0.qkv.weight"], before["blocks.0.qkv.weight"])
    with torch.no_grad():
        assert vit(torch.zeros(2, 3, 224, 224)).shape == (2, 192)


def test_views_carry_codes_clean_and_augmented_images():
    from PIL import Image
    from fakescope.training.data import FeatureViews, ImageViews
    from fakescope.training.views import ViewConfig
    G = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)   # 2 images, 3 global views (0 = clean)
    Lf = -np.ones((2, 1, 4), np.float32)
    fv = FeatureViews({"global": G, "local": Lf}, [0, 1], image_term=True)
    for seed in range(5):
        it = fv.item(1, np.random.default_rng(seed))
        np.testing.assert_array_equal(it["clean"], G[1, 0])
        assert any(np.array_equal(it["augmented"], G[1, v]) for v in (1, 2))   # never the clean view itself
    assert "clean" not in FeatureViews({"global": G, "local": Lf}, [0, 1]).item(0, np.random.default_rng(0))
    img = Image.new("RGB", (40, 30), (200, 10, 10))
    iv = ImageViews([img], [1], ViewConfig(out_size=16), ViewConfig(out_size=16, scale=(0.05, 0.4)), image_term=True)
    it = iv.item(0, np.random.default_rng(0))
    assert {"global", "local", "clean", "augmented", "label"} <= set(it) and it["clean"].shape == it["augmented"].shape
