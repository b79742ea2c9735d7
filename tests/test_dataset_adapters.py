import io
import json
import tarfile

import pytest
from PIL import Image

from fakescope.data.samples import FAKE, REAL
from fakescope.data.webdataset import expand_braces, is_webdataset, iter_webdataset
from fakescope.images import decode_image


def _img_bytes(color, fmt="JPEG"):
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buf, format=fmt)
    return buf.getvalue()


def _add(tar, name, data: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _write_shards(tmp_path):
    for s in range(2):
        with tarfile.open(tmp_path / f"shard-{s:03d}.tar", "w") as tar:
            base = f"s{s}"
            _add(tar, f"{base}/a.jpg", _img_bytes("red"))
            _add(tar, f"{base}/a.cls", b"0")
            _add(tar, f"{base}/b.jpg", _img_bytes("blue"))
            _add(tar, f"{base}/b.json", json.dumps({"label": "fake", "generator": "sdxl",
                                                    "caption": f"cat {s}"}).encode())
            _add(tar, f"{base}/c.jpg", _img_bytes("green"))
            _add(tar, f"{base}/c.txt", b"no label here")
    return str(tmp_path / "shard-{000..001}.tar")


def test_expand_braces():
    assert expand_braces("x-{08..10}.tar") == ["x-08.tar", "x-09.tar", "x-10.tar"]
    assert expand_braces("{a,b}-{1..2}") == ["a-1", "a-2", "b-1", "b-2"]


def test_webdataset_brace_pattern(tmp_path):
    pattern = _write_shards(tmp_path)
    stats = {}
    samples = list(iter_webdataset(pattern, stats=stats))
    assert [s.label for s in samples] == [REAL, FAKE, REAL, FAKE]
    assert [s.generator for s in samples] == [None, "sdxl", None, "sdxl"]
    assert [s.text for s in samples] == [None, "cat 0", None, "cat 1"]
    assert samples[0].path == f"{tmp_path / 'shard-000.tar'}::s0/a"
    assert stats["skipped_no_label"] == 2 and stats["samples"] == 4 and stats["shards"] == 2
    assert decode_image(samples[1].data).size == (16, 16)
    # glob works too
    assert len(list(iter_webdataset(str(tmp_path / "*.tar")))) == 4


def test_webdataset_streams_file_object(tmp_path):
    _write_shards(tmp_path)

    class NoSeek(io.RawIOBase):  # a pipe-like object: tarfile "r|*" must not seek
        def __init__(self, data):
            self._buf = io.BytesIO(data)

        def readable(self):
            return True

        def readinto(self, b):
            n = self._buf.readinto(b)
            return n

    stream = NoSeek((tmp_path / "shard-001.tar").read_bytes())
    stats = {}
    samples = list(iter_webdataset(stream, stats=stats))
    assert [(s.label, s.text) for s in samples] == [(REAL, None), (FAKE, "cat 1")]
    assert stats["skipped_no_label"] == 1


def test_webdataset_caption_from_txt_and_missing_image(tmp_path):
    shard = tmp_path / "one.tar"
    with tarfile.open(shard, "w") as tar:
        _add(tar, "k1.png", _img_bytes("red", "PNG"))
        _add(tar, "k1.cls", b"fake")
        _add(tar, "k1.txt", b"a caption")
        _add(tar, "k2.json", b'{"label": 1}')
    stats = {}
    (s,) = list(iter_webdataset(shard, stats=stats))
    assert (s.label, s.text) == (FAKE, "a caption")
    assert stats["skipped_no_image"] == 1


def test_is_webdataset(tmp_path):
    _write_shards(tmp_path)
    assert is_webdataset(tmp_path / "shard-000.tar")
    folders = tmp_path / "folders.tar"
    with tarfile.open(folders, "w") as tar:
        _add(tar, "real/x.jpg", _img_bytes("red"))
        _add(tar, "fake/sd/y.json", b"{}")
        _add(tar, "fake/sd/y.jpg", _img_bytes("red"))
    assert not is_webdataset(folders)
    (tmp_path / "plain.txt").write_text("hello")
    assert not is_webdataset(tmp_path / "plain.txt")


# ---------------------------------------------------------------- Hugging Face datasets
def test_hf_save_to_disk_custom_mapping(tmp_path):
    datasets = pytest.importorskip("datasets")
    from fakescope.data.hf import iter_hf_dataset

    ds = datasets.Dataset.from_dict(
        {"img": [Image.new("RGB", (8, 8), c) for c in ("red", "blue", "green")],
         "is_fake": [0, 1, 1], "prompt": ["a", "b", "c"], "model": ["", "sd", "dalle"]},
        features=datasets.Features({"img": datasets.Image(), "is_fake": datasets.Value("int64"),
                                    "prompt": datasets.Value("string"), "model": datasets.Value("string")}))
    ds.save_to_disk(str(tmp_path / "ds"))
    stats = {}
    samples = list(iter_hf_dataset(tmp_path / "ds", mapping={"image": "img", "label": "is_fake", "text": "prompt",
                                                            "generator": "model"}, stats=stats))
    assert [s.label for s in samples] == [REAL, FAKE, FAKE]
    assert [s.text for s in samples] == ["a", "b", "c"]
    assert [s.generator for s in samples] == [None, "sd", "dalle"]
    assert stats["samples"] == 3
    assert decode_image(samples[2].data).getpixel((0, 0)) == (0, 128, 0)
    # streaming gives the same
    assert [s.label for s in iter_hf_dataset(tmp_path / "ds", mapping={"image": "img", "label": "is_fake"},
                                             streaming=True)] == [REAL, FAKE, FAKE]


def test_hf_ready_mappings(tmp_path):
    datasets = pytest.importorskip("datasets")
    from fakescope.data.hf import MAPPINGS, iter_hf_dataset

    # D3 / ELSA layout: four generated images per row, the real one is a URL (not fetched)
    cols = {"id": ["r0", "r1"], "original_prompt": ["a dog", "a cat"], "url": ["http://x/0.jpg", "http://x/1.jpg"]}
    feats = {"id": datasets.Value("string"), "original_prompt": datasets.Value("string"),
             "url": datasets.Value("string")}
    for i in range(4):
        cols[f"model_gen{i}"] = [f"gen{i}", f"gen{i}"]
        cols[f"image_gen{i}"] = [Image.new("RGB", (8, 8), (i * 40, 0, 0))] * 2
        feats[f"model_gen{i}"] = datasets.Value("string")
        feats[f"image_gen{i}"] = datasets.Image()
    datasets.Dataset.from_dict(cols, features=datasets.Features(feats)).save_to_disk(str(tmp_path / "d3"))
    samples = list(iter_hf_dataset(tmp_path / "d3", mapping="d3"))
    assert len(samples) == 8 and all(s.label == FAKE for s in samples)
    assert [s.generator for s in samples[:4]] == ["gen0", "gen1", "gen2", "gen3"]
    assert samples[4].text == "a cat"
    assert decode_image(samples[3].data).getpixel((0, 0)) == (120, 0, 0)

    # GenImage layout: ClassLabel ai / nature
    label = datasets.ClassLabel(names=["ai", "nature"])
    dd = datasets.DatasetDict({"val": datasets.Dataset.from_dict(
        {"image": [Image.new("RGB", (8, 8), "red")] * 2, "label": [0, 1]},
        features=datasets.Features({"image": datasets.Image(), "label": label}))})
    dd.save_to_disk(str(tmp_path / "genimage"))
    got = list(iter_hf_dataset(str(tmp_path / "genimage"), split="val", mapping="genimage"))
    assert [s.label for s in got] == [FAKE, REAL]

    # Synthbuster layout: the folder class is both label and generator
    label = datasets.ClassLabel(names=["dalle3", "raise"])
    datasets.Dataset.from_dict({"image": [Image.new("RGB", (8, 8), "red")] * 2, "label": [0, 1]},
                               features=datasets.Features({"image": datasets.Image(), "label": label})
                               ).save_to_disk(str(tmp_path / "sb"))
    got = list(iter_hf_dataset(tmp_path / "sb", mapping="synthbuster"))
    assert [(s.label, s.generator) for s in got] == [(FAKE, "dalle3"), (REAL, None)]
    assert set(MAPPINGS) >= {"default", "cocofake", "d3", "genimage", "synthbuster"}

    with pytest.raises(ValueError):
        list(iter_hf_dataset(tmp_path / "sb", mapping="nope"))


def test_hf_image_cells_and_lazy_import():
    import sys

    from fakescope.data import hf

    assert hf._image_bytes(Image.new("RGB", (4, 4), "red")).startswith(b"\x89PNG")
    assert hf._image_bytes({"bytes": b"abc", "path": None}) == b"abc"
    assert hf._image_bytes("http://example.invalid/x.jpg") is None
    assert "datasets" not in vars(hf)  # imported only when a dataset is read
    assert sys.modules.get("fakescope.data.hf") is hf


def test_load_labelled_dispatches_to_the_adapters(tmp_path):
    """Training and eval read WebDataset shards and hf: datasets through the one entry point."""
    import io as _io
    import tarfile as _tarfile

    from PIL import Image as _Image

    from fakescope.data.samples import FAKE, REAL
    from fakescope.data.sources import load_labelled

    for shard in range(2):
        with _tarfile.open(tmp_path / f"s-{shard:03d}.tar", "w") as tar:
            for k, label in enumerate(("0", "1")):
                buf = _io.BytesIO()
                _Image.new("RGB", (8, 8), (k * 200, 10, 10)).save(buf, "JPEG")
                for ext, data in (("jpg", buf.getvalue()), ("cls", label.encode())):
                    info = _tarfile.TarInfo(f"{shard}{k}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, _io.BytesIO(data))
    got = list(load_labelled(str(tmp_path / "s-{000..001}.tar")))
    assert sorted(s.label for s in got) == [REAL, REAL, FAKE, FAKE]
    assert [s.label for s in load_labelled(tmp_path / "s-000.tar")] == [REAL, FAKE]


def test_manifest_split_column(tmp_path):
    from PIL import Image as _Image

    from fakescope.data.sources import load_labelled

    rows = ["path,label,generator,caption,split"]
    for i, (label, split) in enumerate([("real", "train"), ("fake", "train"), ("real", "test"), ("fake", "test")]):
        _Image.new("RGB", (8, 8)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{label},{'g' if label == 'fake' else ''},a cap {i},{split}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    test = list(load_labelled(f"{tmp_path / 'm.csv'}?split=test"))
    assert [s.path.rsplit("/", 1)[-1] for s in test] == ["2.png", "3.png"]
    assert [s.text for s in test] == ["a cap 2", "a cap 3"]
    assert len(list(load_labelled(tmp_path / "m.csv"))) == 4
