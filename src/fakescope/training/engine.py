"""The training engine: one loop for one process and for several (`torchrun`, PyTorch DDP).

    run(model, loss_fn, dataset, cfg) -> list of per-epoch metrics

Same code path in both cases. Started by `torchrun` (RANK / WORLD_SIZE / MASTER_ADDR in the
environment) it joins a process group (`gloo` on CPU, `nccl` on GPUs) and wraps the model in
DistributedDataParallel; otherwise it is a group of one and nothing is wrapped.

Data. Each epoch draws one permutation of the dataset from (seed, epoch); step s takes the
global batch perm[s*B:(s+1)*B] and process r builds the r-th of its W equal slices. Each item's
views are drawn from a generator seeded by (seed, epoch, item index), so the global batch (and
every view in it) is the same whether 1 process builds it or W processes build a slice each.

Loss over the global batch. `loss_fn(model, batch, ctx)` gets the local slice; a contrastive loss
calls `ctx.gather(z)` to see the embeddings of the whole global batch (an all-gather whose
backward sums the gradients of all processes), so its negatives come from the global batch and
every process computes the same global loss L. DDP averages parameter gradients over the W
processes; each holds W * dL/dz for its own rows, so the average is exactly dL/dtheta: W processes
with batch B/W each take the same step as 1 process with batch B (up to float summation order).

Checkpoints (rank 0, atomic: temporary file + os.replace) are one safetensors file with model,
optimizer and scheduler state, epoch, step and the torch RNG; `resume=True` continues from the last
one (mid-epoch too: the data order is a function of (seed, epoch), so the skipped batches are the
ones already trained on). Rank 0 also appends one JSON line per epoch to `metrics.jsonl` and shows
a progress bar (not with FAKESCOPE_NO_PROGRESS). Mixed precision (autocast) runs where the device
supports it: bf16 on GPUs that have it, else fp16 with a gradient scaler; CPU stays fp32 unless
amp="bf16" is asked for.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch
import torch.distributed as dist

from ..files import replacing

CHECKPOINT = "checkpoint.safetensors"
METRICS = "metrics.jsonl"
FORMAT = "fakescope.checkpoint/1"


@dataclass
class TrainLoopConfig:
    epochs: int = 10                  # passes over the dataset
    batch_size: int = 128             # GLOBAL batch (all processes together); each process builds batch_size / W
    lr: float = 1e-3                  # peak learning rate of AdamW
    weight_decay: float = 0.05        # AdamW decoupled weight decay
    warmup_steps: int = 0             # linear warm-up from 0 to lr over this many optimizer steps
    min_lr_ratio: float = 0.01        # cosine decay ends at lr * min_lr_ratio after the last step
    grad_clip: float | None = 1.0     # clip the global gradient norm (None: no clipping)
    seed: int = 0                     # data order and views (model init is the caller's)
    out_dir: str | None = None        # checkpoint + metrics.jsonl go here (None: neither)
    resume: bool = False              # continue from out_dir's checkpoint if one exists (and matches)
    checkpoint_every: int = 0         # also checkpoint every N optimizer steps (0: at the end of each epoch only)
    max_steps: int | None = None      # stop (with a checkpoint) after this many steps in total
    max_seconds: float | None = None  # stop (with a checkpoint) once this session has run this long: a time budget
    amp: str = "auto"                 # "auto": bf16/fp16 autocast on GPUs; "off"; "bf16"; "fp16"
    device: str = "auto"              # "auto": cuda:LOCAL_RANK if available, else cpu
    workers: int = 2                  # threads building views (0: in the training thread)
    progress: bool = True             # tqdm bar on rank 0 (FAKESCOPE_NO_PROGRESS=1 turns it off)
    desc: str = "train"               # progress bar label and metrics tag

    def signature(self) -> str:
        """What must match for a checkpoint to be resumed (not out_dir / resume / budgets / display)."""
        keep = {k: v for k, v in asdict(self).items()
                if k not in ("out_dir", "resume", "checkpoint_every", "max_steps", "max_seconds", "workers", "progress",
                             "desc", "device")}
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


class Dataset(Protocol):
    def __len__(self) -> int: ...
    def item(self, index: int, rng: np.random.Generator) -> dict[str, np.ndarray | int | float]: ...


# ------------------------------------------------------------------ process group
@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    created: bool = False             # True if we initialised the group (and so must destroy it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> Dist:
    """Join the process group torchrun describes in the environment (idempotent); a group of one
    without it. Backend: nccl when this process uses a GPU, else gloo."""
    if dist.is_available() and dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), False)
    ws = int(os.environ.get("WORLD_SIZE", "1"))
    if ws <= 1 or "RANK" not in os.environ:
        return Dist()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = _device(device, local).type == "cuda"
    if use_cuda:
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if use_cuda else "gloo", init_method="env://")
    return Dist(dist.get_rank(), dist.get_world_size(), local, True)


def shutdown_distributed(d: Dist) -> None:
    if d.created and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def _device(spec: str, local_rank: int = 0) -> torch.device:
    if spec == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(spec)


class _AllGather(torch.autograd.Function):
    """Concatenate every process's (n, ...) tensor along dim 0; backward sums the incoming
    gradients over processes and returns this process's rows (all processes hold the same loss)."""

    @staticmethod
    def forward(ctx, x):
        ws, rank = dist.get_world_size(), dist.get_rank()
        out = [torch.empty_like(x) for _ in range(ws)]
        dist.all_gather(out, x.contiguous())
        ctx.rank, ctx.n = rank, x.shape[0]
        return torch.cat(out, 0)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


@dataclass
class StepContext:
    rank: int
    world_size: int
    epoch: int
    step: int                         # global optimizer step (0-based) being computed
    device: torch.device

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """The global batch's rows of `t` (in global-batch order); differentiable."""
        if self.world_size == 1:
            return t
        if t.requires_grad:
            return _AllGather.apply(t)
        out = [torch.empty_like(t) for _ in range(self.world_size)]
        dist.all_gather(out, t.contiguous())
        return torch.cat(out, 0)


LossFn = Callable[[torch.nn.Module, dict, StepContext], "tuple[torch.Tensor, dict[str, float]]"]


# ------------------------------------------------------------------ data
def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(epoch), int(index)])


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([int(seed), int(epoch), 2**31 - 1]).permutation(n)


def global_batch_size(n: int, batch_size: int, world_size: int) -> int:
    """The global batch actually used: at most the dataset, divisible by the number of processes."""
    b = min(batch_size, n)
    b -= b % world_size
    if b <= 0:
        raise ValueError(f"{n} training items cannot fill one batch on {world_size} processes")
    return b


def collate(items: list[dict]) -> dict[str, torch.Tensor]:
    out = {}
    for k in items[0]:
        out[k] = torch.from_numpy(np.stack([np.asarray(it[k]) for it in items]))
    return out


def _build(dataset: Dataset, indices: np.ndarray, seed: int, epoch: int, pool) -> dict[str, torch.Tensor]:
    if pool is None:
        items = [dataset.item(int(i), item_rng(seed, epoch, int(i))) for i in indices]
    else:
        items = list(pool.map(lambda i: dataset.item(int(i), item_rng(seed, epoch, int(i))), indices))
    return collate(items)


# ------------------------------------------------------------------ schedule + checkpoints
def lr_lambda(total_steps: int, warmup: int, min_ratio: float) -> Callable[[int], float]:
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, total_steps - warmup)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    return f


def save_checkpoint(path: Path, model: torch.nn.Module, opt, sched, state: dict, scaler=None) -> None:
    """model / optimizer tensors + JSON state in one safetensors file, written atomically."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    osd = opt.state_dict()
    opt_scalars: dict[str, dict] = {}
    for pid, st in osd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                opt_scalars.setdefault(str(pid), {})[k] = v
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {**state, "param_groups": osd["param_groups"], "opt_scalars": opt_scalars,
            "scheduler": sched.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None}
    with replacing(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "state": json.dumps(meta, default=float)})


def read_checkpoint(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: not a fakescope training checkpoint")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return json.loads(meta["state"]), tensors


def _restore(model, opt, sched, scaler, meta: dict, tensors: dict) -> None:
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    for pid, sc in meta.get("opt_scalars", {}).items():
        state.setdefault(int(pid), {}).update(sc)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    sched.load_state_dict(meta["scheduler"])
    if scaler is not None and meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])


def _autocast(cfg: TrainLoopConfig, device: torch.device):
    """(context, scaler): the mixed-precision setting this device supports."""
    mode = cfg.amp
    if mode == "auto":
        mode = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if device.type == "cuda" else "off"
    if mode == "off":
        return nullcontext, None
    dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 and device.type == "cuda" else None
    return (lambda: torch.autocast(device.type, dtype=dtype)), scaler


def _progress(total: int, initial: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm
    quiet = not enabled or bool(os.environ.get("FAKESCOPE_NO_PROGRESS")) or not sys.stderr.isatty()
    return tqdm(total=total, initial=initial, desc=desc, unit="step", disable=quiet, leave=False, dynamic_ncols=True)


def _out_of_time(cfg: TrainLoopConfig, start: float, d: Dist, device: torch.device) -> bool:
    """Whether the time budget is spent; rank 0's clock decides for all (every process stops at the same step)."""
    if not cfg.max_seconds:
        return False
    flag = torch.tensor([1.0 if time.time() - start >= cfg.max_seconds else 0.0], device=device)
    if d.world_size > 1:
        dist.broadcast(flag, src=0)
    return bool(flag.item())


# ------------------------------------------------------------------ the loop
def run(model: torch.nn.Module, loss_fn: LossFn, dataset: Dataset, cfg: TrainLoopConfig,
        log: Callable[[str], Any] | None = None) -> list[dict]:
    """Train `model` in place; returns the per-epoch metrics (also in out_dir/metrics.jsonl on rank 0)."""
    d = init_distributed(cfg.device)
    try:
        return _run(model, loss_fn, dataset, cfg, d, log)
    finally:
        shutdown_distributed(d)


def _run(model, loss_fn, dataset, cfg: TrainLoopConfig, d: Dist, log) -> list[dict]:
    device = _device(cfg.device, d.local_rank)
    model.to(device)
    n = len(dataset)
    B = global_batch_size(n, cfg.batch_size, d.world_size)
    b = B // d.world_size
    steps_per_epoch = n // B
    total = steps_per_epoch * cfg.epochs
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total, cfg.warmup_steps, cfg.min_lr_ratio))
    autocast, scaler = _autocast(cfg, device)
    out = Path(cfg.out_dir) if cfg.out_dir else None
    ckpt = out / CHECKPOINT if out else None
    sig = cfg.signature()

    start_epoch, start_step, global_step = 0, 0, 0
    if cfg.resume and ckpt is not None:
        payload = [None]
        if d.is_main and ckpt.exists():  # rank 0 reads; the others receive it (no shared disk needed)
            meta, tensors = read_checkpoint(ckpt)
            if meta.get("signature") != sig or meta.get("n") != n:
                if log:
                    log(f"{ckpt}: written by a different configuration or dataset; starting afresh")
            else:
                payload = [(meta, tensors)]
        if d.world_size > 1:
            dist.broadcast_object_list(payload, src=0)
        if payload[0] is not None:
            meta, tensors = payload[0]
            _restore(model, opt, sched, scaler, meta, tensors)
            start_epoch, start_step, global_step = meta["epoch"], meta["step_in_epoch"], meta["global_step"]
            if start_step >= steps_per_epoch:
                start_epoch, start_step = start_epoch + 1, 0
            if log and d.is_main:
                log(f"resuming {cfg.desc} at epoch {start_epoch + 1}, step {global_step} of {total}")

    train_model = model
    if d.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        train_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    def checkpoint(epoch: int, step_in_epoch: int) -> None:
        if ckpt is not None and d.is_main:
            save_checkpoint(ckpt, model, opt, sched, {"epoch": epoch, "step_in_epoch": step_in_epoch,
                                                      "global_step": global_step, "signature": sig, "n": n,
                                                      "world_size": d.world_size}, scaler)

    history: list[dict] = []
    session_start = time.time()
    pool = ThreadPoolExecutor(cfg.workers, thread_name_prefix="fakescope-views") if cfg.workers > 0 else None
    prefetch = ThreadPoolExecutor(1, thread_name_prefix="fakescope-batches")
    bar = _progress(total, global_step, cfg.desc, cfg.progress and d.is_main)
    stopped = False
    try:
        for epoch in range(start_epoch, cfg.epochs):
            order = epoch_order(n, cfg.seed, epoch)
            first = start_step if epoch == start_epoch else 0
            slices = [order[s * B + d.rank * b: s * B + (d.rank + 1) * b] for s in range(first, steps_per_epoch)]
            sums: dict[str, float] = {}
            count, t0 = 0, time.time()
            model.train()
            nxt = prefetch.submit(_build, dataset, slices[0], cfg.seed, epoch, pool) if slices else None
            for k, s in enumerate(range(first, steps_per_epoch)):
                if (cfg.max_steps is not None and global_step >= cfg.max_steps) or _out_of_time(cfg, session_start, d, device):
                    stopped = True
                    if log and d.is_main:
                        log(f"{cfg.desc}: stopping at step {global_step} of {total} (budget reached; checkpoint kept)")
                    break
                batch = nxt.result()
                nxt = prefetch.submit(_build, dataset, slices[k + 1], cfg.seed, epoch, pool) \
                    if k + 1 < len(slices) else None
                batch = {key: v.to(device, non_blocking=True) for key, v in batch.items()}
                ctx = StepContext(d.rank, d.world_size, epoch, global_step, device)
                with autocast():
                    loss, parts = loss_fn(train_model, batch, ctx)
                opt.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(opt)
                else:
                    loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                if scaler is not None:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
                sched.step()
                global_step += 1
                count += 1
                for key, v in {"loss": float(loss.detach()), **{k2: float(v2) for k2, v2 in parts.items()}}.items():
                    sums[key] = sums.get(key, 0.0) + v
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}", refresh=False)
                if cfg.checkpoint_every and global_step % cfg.checkpoint_every == 0:
                    checkpoint(epoch, s + 1)
            if nxt is not None:
                nxt.cancel()
            if stopped:
                checkpoint(epoch, first + count)
                break
            checkpoint(epoch, steps_per_epoch)
            secs = time.time() - t0
            rec = {"run": cfg.desc, "epoch": epoch + 1, "epochs": cfg.epochs, "step": global_step,
                   "steps_this_session": count, **{k: v / max(1, count) for k, v in sums.items()},
                   "lr": sched.get_last_lr()[0], "seconds": round(secs, 2),
                   "images_per_s": round(count * B / secs, 1) if secs > 0 else None,
                   "global_batch": B, "world_size": d.world_size}
            history.append(rec)
            if d.is_main:
                if out is not None:
                    out.mkdir(parents=True, exist_ok=True)
                    with (out / METRICS).open("a") as f:
                        f.write(json.dumps(rec) + "\n")
                if log:
                    log(f"{cfg.desc} epoch {epoch + 1}/{cfg.epochs}: loss {rec['loss']:.4f} "
                        f"({rec['seconds']:.0f} s, {rec['images_per_s']} items/s)")
    finally:
        bar.close()
        prefetch.shutdown(wait=True, cancel_futures=True)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    model.eval()
    barrier()
    return history


__all__ = ["Dist", "StepContext", "TrainLoopConfig", "barrier", "collate", "epoch_order", "global_batch_size",
           "init_distributed", "item_rng", "read_checkpoint", "run", "save_checkpoint", "shutdown_distributed"]
