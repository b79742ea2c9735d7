"""The `table.csv` of a CocoGlide-style folder, as the builders write it (data/pairs.py reads it).

    real/<name>.<ext>   fake/[<generator>/]<name>_<k>.<ext>   mask/<name>_<k>.png   table.csv

One row per edited image: `real,fake,mask,prompt` and the builder's own columns (`make-edits`:
mechanism, mask kind, area; `build inpaint`: generator, seed, steps, ...). Both builders are
resumable the same way: a row is appended as soon as its files exist (a killed run keeps it),
read back on the next run (a last line cut by the kill is dropped), and at the end the table
is rewritten atomically in the builder's order, followed by rows of earlier runs it did not plan.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Sequence

from ..files import atomic_write


class PairTable:
    def __init__(self, path: str | Path, columns: Sequence[str]):
        self.path, self.columns = Path(path), tuple(columns)
        self.rows: dict[str, dict] = self._read()   # by fake path
        self.earlier = list(self.rows)              # keys found on disk, in their order

    def _row(self, row: dict) -> dict:
        return {c: "" if row.get(c) is None else str(row.get(c)) for c in self.columns}

    def _read(self) -> dict[str, dict]:
        if not self.path.is_file():
            return {}
        text = self.path.read_text(encoding="utf-8")
        if text and not text.endswith("\n"):  # a line cut by a kill
            text = text[:text.rfind("\n") + 1]
        return {r["fake"]: self._row(r) for r in csv.DictReader(io.StringIO(text, newline=""))
                if r.get("fake") and None not in r.values()}

    def drop_missing(self, root: str | Path) -> None:
        """Forget rows whose real, fake or mask file is gone, so they are made again."""
        root = Path(root)
        for key, row in list(self.rows.items()):
            if not all((root / row[c]).is_file() for c in ("real", "fake", "mask") if row.get(c)):
                del self.rows[key]

    def add(self, row: dict) -> dict:
        """Append one row now (header first in a new file) and keep it for the final rewrite."""
        row = self._row(row)
        new_file = not self.path.is_file() or self.path.stat().st_size == 0
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            wr = csv.DictWriter(f, fieldnames=self.columns, lineterminator="\n")
            if new_file:
                wr.writeheader()
            wr.writerow(row)
        self.rows[row["fake"]] = row
        return row

    def rewrite(self, order: Sequence[str]) -> list[dict]:
        """The table in `order` (fake paths; those without a row skipped), then earlier rows not in it."""
        planned = set(order)
        keys = [k for k in order if k in self.rows] + [k for k in self.earlier if k not in planned and k in self.rows]
        buf = io.StringIO()
        wr = csv.DictWriter(buf, fieldnames=self.columns, lineterminator="\n")
        wr.writeheader()
        rows = [self.rows[k] for k in keys]
        wr.writerows(rows)
        atomic_write(self.path, buf.getvalue().encode("utf-8"))
        return rows


__all__ = ["PairTable"]
