"""data/pair_table.py: the table.csv both CocoGlide-layout builders (make-edits, build inpaint) write."""
import csv
import io

from fakescope.data.pair_table import PairTable

COLS = ("real", "fake", "mask", "prompt", "area")


def _rows(path):
    return list(csv.DictReader(io.StringIO(path.read_text(), newline="")))


def test_rows_survive_a_kill_and_the_rewrite_keeps_plan_order_then_earlier_rows(tmp_path):
    t = PairTable(tmp_path / "table.csv", COLS)
    t.add({"real": "real/a.png", "fake": "fake/a_0.png", "mask": "mask/a_0.png", "area": 0.25})
    t.add({"real": "", "fake": "fake/b_0.png", "mask": "mask/b_0.png", "prompt": None})
    with open(tmp_path / "table.csv", "a") as f:
        f.write("real/c.png,fake/c_0.png,ma")  # a run killed mid-row
    again = PairTable(tmp_path / "table.csv", COLS)
    assert list(again.rows) == ["fake/a_0.png", "fake/b_0.png"]  # the torn row is gone
    assert again.rows["fake/a_0.png"]["area"] == "0.25" and again.rows["fake/b_0.png"]["prompt"] == ""
    again.add({"real": "real/d.png", "fake": "fake/d_0.png", "mask": "mask/d_0.png"})
    rows = again.rewrite(["fake/d_0.png", "fake/b_0.png", "fake/never_made.png"])
    assert [r["fake"] for r in rows] == ["fake/d_0.png", "fake/b_0.png", "fake/a_0.png"]
    assert [r["fake"] for r in _rows(tmp_path / "table.csv")] == [r["fake"] for r in rows]
    assert (tmp_path / "table.csv").read_text().endswith("\n")


def test_rows_whose_files_vanished_are_made_again(tmp_path):
    for f in ("real/a.png", "fake/a_0.png", "mask/a_0.png", "fake/b_0.png"):
        (tmp_path / f).parent.mkdir(exist_ok=True)
        (tmp_path / f).write_bytes(b"x")
    t = PairTable(tmp_path / "table.csv", COLS)
    t.add({"real": "real/a.png", "fake": "fake/a_0.png", "mask": "mask/a_0.png"})
    t.add({"real": "", "fake": "fake/b_0.png", "mask": "mask/b_0.png"})  # its mask is missing
    t.drop_missing(tmp_path)
    assert list(t.rows) == ["fake/a_0.png"]
