"""Hostile archives (issue 18, case 2, and the tar cases that already held): no tar, WebDataset
or metadata member over the byte limit is read into memory, in any entry point; the member
becomes that image's `too_large` error and the rest of the archive goes on."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile

import pytest

from fakescope.data.sources import load_labelled
from fakescope.images import ImageLimits

from .conftest import png_bytes, run

LIMIT = 3000


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def extracted(monkeypatch):
    """Sizes of every tar member anything reads (the boundary where a member enters memory)."""
    sizes: list[int] = []
    real = tarfile.TarFile.extractfile

    def spy(self, member):
        m = self.getmember(member) if isinstance(member, str) else member
        sizes.append(m.size)
        return real(self, member)

    monkeypatch.setattr(tarfile.TarFile, "extractfile", spy)
    return sizes


def _layout_tar(path, mode="w:gz"):
    with tarfile.open(path, mode) as tar:
        _add(tar, "real/small.png", png_bytes(1))
        _add(tar, "fake/gen/big.png", os.urandom(LIMIT * 2))   # over the limit
        _add(tar, "manifest.csv", b"path,text\n" + b"real/small.png,x\n" * 400)  # a caption table over it too
    return path


def test_case2_scan_of_a_compressed_tar_reads_no_member_over_max_bytes(tmp_path, tiny_model, extracted):
    src, out = _layout_tar(tmp_path / "a.tar.gz"), tmp_path / "r.jsonl"
    r = run("scan", src, "--model", tiny_model, "--out", out, "--max-bytes", LIMIT, "--no-table")
    assert r.exit_code == 3, r.output  # one scored, one failed
    recs = {x["path"].split("::")[1]: x for x in map(json.loads, out.read_text().splitlines())}
    assert recs["fake/gen/big.png"]["error"].startswith("too_large") and recs["real/small.png"]["score"] is not None
    assert extracted and max(extracted) <= LIMIT


@pytest.mark.parametrize("mode", ["w:gz", "w"])
def test_case2_eval_of_a_tar_reads_no_member_over_the_limit(tmp_path, extracted, mode):
    samples = list(load_labelled(_layout_tar(tmp_path / f"a.tar{'.gz' if 'gz' in mode else ''}", mode),
                                 ImageLimits(max_bytes=LIMIT)))
    by = {s.path.split("::")[1]: s for s in samples}
    assert by["fake/gen/big.png"].error.startswith("too_large") and by["fake/gen/big.png"].data is None
    assert by["real/small.png"].data is not None
    assert max(extracted) <= LIMIT


def test_case2_webdataset_image_and_metadata_members_over_the_limit_are_not_read(tmp_path, tiny_model, extracted):
    shard = tmp_path / "s-0.tar"
    with tarfile.open(shard, "w") as tar:
        _add(tar, "a.png", png_bytes(2))
        _add(tar, "a.cls", b"1")
        _add(tar, "b.png", os.urandom(LIMIT * 2))
        _add(tar, "b.cls", b"0")
        _add(tar, "c.png", png_bytes(3))
        _add(tar, "c.json", json.dumps({"label": 0, "caption": "x" * LIMIT * 2}).encode())
    samples = {s.path.rsplit("::")[1]: s for s in load_labelled(str(tmp_path / "s-{0..0}.tar"), ImageLimits(max_bytes=LIMIT))}
    assert samples["b"].error.startswith("too_large") and samples["a"].data is not None
    assert "c" not in samples  # its only label sits in a .json over the limit: skipped as unlabelled, not read
    out = tmp_path / "r.jsonl"
    r = run("scan", str(tmp_path / "s-{0..0}.tar"), "--model", tiny_model, "--out", out, "--max-bytes", LIMIT, "--no-table")
    assert r.exit_code == 3, r.output
    assert max(extracted) <= LIMIT


@pytest.mark.skipif(shutil.which("tar") is None or shutil.which("truncate") is None, reason="needs GNU tar")
def test_case2_a_sparse_tar_declaring_a_gigabyte_is_not_inflated(tmp_path, extracted):
    (tmp_path / "real").mkdir()
    subprocess.run(["truncate", "-s", "1G", str(tmp_path / "real" / "huge.png")], check=True)
    (tmp_path / "real" / "ok.png").write_bytes(png_bytes(4))
    tar = tmp_path / "sparse.tar"
    subprocess.run(["tar", "--sparse", "-cf", str(tar), "-C", str(tmp_path), "real"], check=True)
    assert tar.stat().st_size < 1_000_000
    samples = {s.path.split("::")[1]: s for s in load_labelled(tar)}  # the default 50 MB limit
    assert samples["real/huge.png"].error.startswith("too_large") and samples["real/ok.png"].data is not None
    assert max(extracted) < 2**20
