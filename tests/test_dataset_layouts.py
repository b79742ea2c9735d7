"""The benchmarks' release layouts (data/layouts.py) on tiny folders built here."""
import json

import pytest
from PIL import Image

from fakescope.data.samples import FAKE, REAL
from fakescope.data.sources import load_labelled


def _img(path, color="red"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path)


def test_cocofake_links_children_to_parents_and_captions(tmp_path):
    coco, fake = tmp_path / "coco", tmp_path / "cocofake"
    for stem in ("COCO_val2014_000000000001", "COCO_val2014_000000000002"):
        _img(coco / "validation" / "data" / f"{stem}.jpg")
        for k in range(2):
            _img(fake / "val2014" / stem / f"{k}.png", "blue")
    _img(coco / "validation" / "data" / "COCO_val2014_000000000009.jpg")  # a real with no children: not read
    caps = {"images": [{"id": 1, "file_name": "COCO_val2014_000000000001.jpg"}],
            "annotations": [{"image_id": 1, "caption": "a dog "}, {"image_id": 1, "caption": "a brown dog"}]}
    (tmp_path / "caps.json").write_text(json.dumps(caps))

    ref = f"cocofake:{fake}?coco={coco}&split=val2014&captions={tmp_path / 'caps.json'}&generator=sd14"
    got = list(load_labelled(ref))
    assert [s.label for s in got] == [REAL, FAKE, FAKE, REAL, FAKE, FAKE]
    assert [s.text for s in got[:3]] == ["a dog", "a dog", "a brown dog"]
    assert got[3].text is None and {s.generator for s in got if s.label == FAKE} == {"sd14"}
    assert got[1].path.endswith("COCO_val2014_000000000001/0.png")

    with pytest.raises(ValueError, match="not a folder"):
        list(load_labelled(f"cocofake:{fake}?split=train2014"))


def test_genimage_layout_per_generator_and_split(tmp_path):
    for gen in ("adm", "glide"):
        for split in ("train", "val"):
            _img(tmp_path / gen / split / "ai" / "1_adm_1.png")
            _img(tmp_path / gen / split / "nature" / "n01_1.JPEG")
    got = list(load_labelled(f"genimage:{tmp_path}?split=val"))
    assert [(s.label, s.generator) for s in got] == [(REAL, None), (FAKE, "adm"), (REAL, None), (FAKE, "glide")]
    only = list(load_labelled(f"genimage:{tmp_path}?split=train&generators=glide"))
    assert {s.generator for s in only if s.label == FAKE} == {"glide"} and len(only) == 2


def test_synthbuster_needs_its_reals(tmp_path):
    for gen in ("dalle3", "midjourney-v5"):
        _img(tmp_path / "sb" / gen / "r0a.png")
    with pytest.raises(ValueError, match="RAISE"):
        list(load_labelled(f"synthbuster:{tmp_path / 'sb'}"))
    _img(tmp_path / "raise1k" / "r0.png")
    got = list(load_labelled(f"synthbuster:{tmp_path / 'sb'}?real={tmp_path / 'raise1k'}"))
    assert [(s.label, s.generator) for s in got] == [(REAL, None), (FAKE, "dalle3"), (FAKE, "midjourney-v5")]
    _img(tmp_path / "sb" / "raise" / "r1.png")  # a `raise` folder under the root is found by itself
    got = list(load_labelled(f"synthbuster:{tmp_path / 'sb'}"))
    assert sum(s.label == REAL for s in got) == 1 and len(got) == 3
