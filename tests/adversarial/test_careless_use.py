"""Careless use and broken inputs (issue 18, cases 8, 9, 11 and 12): a message, never a hang or a
traceback; a bad item is that item's error and the batch goes on."""
from __future__ import annotations

import errno
import json
import os
import threading

import numpy as np
import pytest
from safetensors.numpy import save_file

from .conftest import assert_one_line_error, edit_json, png_bytes, run, save_tiny_detector


def _records(path):
    return {json.loads(x)["path"]: json.loads(x) for x in path.read_text().splitlines()}


def _unblock_readers(fifo, stop: threading.Event):
    """Should a reader block on the FIFO, give it EOF (bounded: 100 tries), so a failing test ends."""
    for _ in range(100):
        if stop.wait(0.1):
            return
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass


@pytest.mark.parametrize("how", ["named", "stdin", "walked"])
def test_case8_a_fifo_is_a_per_item_error_not_a_hang(tmp_path, tiny_model, images, how):
    fifo = images / "pipe.png"
    os.mkfifo(fifo)
    stop = threading.Event()
    helper = threading.Thread(target=_unblock_readers, args=(fifo, stop), daemon=True)
    helper.start()
    out = tmp_path / "r.jsonl"
    try:
        if how == "named":
            r = run("scan", fifo, images / "im0.png", "--model", tiny_model, "--out", out, "--no-table")
        elif how == "stdin":
            r = run("scan", "-", "--model", tiny_model, "--out", out, "--no-table", input=f"{fifo}\n{images / 'im0.png'}\n")
        else:
            r = run("scan", images, "--model", tiny_model, "--out", out, "--no-table")
    finally:
        stop.set()
        helper.join()
    assert r.exit_code == 3, r.output
    recs = _records(out)
    assert recs[str(fifo)]["error"].startswith("unreadable: not a regular file")
    assert recs[str(images / "im0.png")]["score"] is not None


def test_case8_a_dangling_link_in_a_walked_folder_is_reported(tmp_path, tiny_model, images):
    (images / "gone.png").symlink_to(tmp_path / "nowhere.png")
    out = tmp_path / "r.jsonl"
    r = run("scan", images, "--model", tiny_model, "--out", out, "--no-table")
    assert r.exit_code == 3 and _records(out)[str(images / "gone.png")]["error"].startswith("unreadable")


@pytest.mark.parametrize("name,shown", [("x[/b].png", "[/b]"),           # a folder `x[` holding `b].png`
                                        ("[bold red]x.png", "[bold red]"),
                                        ("a\x1b[31mred.png", "\\x1b[31m")])  # shown escaped, not sent
def test_case9_markup_and_escape_codes_in_names_are_printed_as_text(tmp_path, tiny_model, name, shown):
    d = tmp_path / "in"
    (d / name).parent.mkdir(parents=True)
    (d / name).write_bytes(png_bytes(1))
    (d / name).with_name("bad" + (d / name).name).write_bytes(b"not an image [/red] \x1b[2J")
    r = run("scan", d, "--model", tiny_model)
    assert r.exit_code == 3, (r.output, r.exception)
    assert "\x1b" not in r.output and shown in r.output.replace("\n", "")


def _broken(tmp_path, kind):
    d = save_tiny_detector(tmp_path / kind)
    if kind == "missing-key":
        meta = json.loads((d / "detector.json").read_text())
        del meta["method"]
        (d / "detector.json").write_text(json.dumps(meta))
    elif kind == "wrong-shape":
        save_file({"mean": np.zeros(5, np.float32), "std": np.ones(5, np.float32), "weight": np.ones(5, np.float32),
                   "bias": np.zeros(1, np.float32)}, str(d / "head.safetensors"))
    elif kind == "pickle":
        import pickle
        (d / "head.safetensors").write_bytes(pickle.dumps({"weight": [1.0]}))
    elif kind == "nested-json":
        (d / "detector.json").write_text("[" * 100_000 + "]" * 100_000)
    elif kind == "not-an-object":
        (d / "detector.json").write_text("[1, 2]")
    elif kind == "absurd-input-size":  # case 12: would allocate until memory runs out
        edit_json(d / "detector.json", backbone__input_size=100000)
    return d


@pytest.mark.parametrize("kind", ["missing-key", "wrong-shape", "pickle", "nested-json", "not-an-object",
                                  "absurd-input-size"])
def test_case11_12_broken_model_folders_are_one_line_and_exit_2(tmp_path, images, kind):
    assert_one_line_error(run("scan", images, "--model", _broken(tmp_path, kind), "--no-table"), kind.split("-")[0]
                          if kind in ("pickle",) else "")


def test_case11_output_paths_that_cannot_be_written(tmp_path, tiny_model, images, monkeypatch):
    folder = tmp_path / "dir"
    folder.mkdir()
    assert_one_line_error(run("scan", images, "--model", tiny_model, "--out", folder, "--format", "jsonl", "--no-table"),
                          "folder")
    if os.path.exists("/dev/full"):
        assert_one_line_error(run("scan", images, "--model", tiny_model, "--out", "/dev/full", "--no-table"),
                              "not a regular file")
    assert_one_line_error(run("scan", images, "--model", tiny_model, "--out", "/proc/fakescope/r.jsonl", "--no-table"))

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)  # the disk fills up while results are written
    assert_one_line_error(run("scan", images, "--model", tiny_model, "--out", tmp_path / "r.jsonl", "--no-table"),
                          "no space")


def test_case11_hf_with_nothing_after_it_is_a_usage_error(tiny_model):
    assert_one_line_error(run("scan", "hf:", "--model", tiny_model, "--no-table"), "hf:")


def test_case12_max_pixels_is_the_one_limit_not_pillows(monkeypatch):
    """Pillow refuses images over twice its global cap (about 179 MP by default) before our check
    runs; a user's larger --max-pixels must win. Pillow's cap is lowered here so that a small image
    stands in for a 200 MP one; the test restores it."""
    import io

    from PIL import Image

    from fakescope import images

    buf = io.BytesIO()
    Image.new("RGB", (100, 100), (10, 20, 30)).save(buf, "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)  # Pillow: warning above 1,000, error above 2,000
    img = images.decode_bytes(buf.getvalue(), images.ImageLimits(max_pixels=20_000))
    assert img.size == (100, 100) and Image.MAX_IMAGE_PIXELS == 20_000  # raised to the user's limit
    with pytest.raises(images.DecompressionBombError, match="over the limit of 5,000"):
        images.decode_bytes(buf.getvalue(), images.ImageLimits(max_pixels=5_000))
    assert Image.MAX_IMAGE_PIXELS == 20_000  # never lowered
