"""Progress bars that appear only where a person is watching (a terminal, a long run)."""
from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm


def progress(total: int | None = None, desc: str = "", min_total: int = 32):
    quiet = os.environ.get("FAKESCOPE_NO_PROGRESS") or not sys.stderr.isatty() or (total is not None and total < min_total)
    return tqdm(total=total, desc=desc, unit="img", disable=bool(quiet), leave=False, dynamic_ncols=True)
