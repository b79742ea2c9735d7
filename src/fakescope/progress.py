"""Progress bars that appear only where a person is watching (a terminal, a long run) and the
`fakescope` logger lets information through (`--quiet` turns them off with the messages)."""
from __future__ import annotations

import logging
import os
import sys

from tqdm.auto import tqdm


def progress(total: int | None = None, desc: str = "", min_total: int = 32, unit: str = "img"):
    quiet = os.environ.get("FAKESCOPE_NO_PROGRESS") or not sys.stderr.isatty() \
        or (total is not None and total < min_total) or not logging.getLogger("fakescope").isEnabledFor(logging.INFO)
    return tqdm(total=total, desc=desc, unit=unit, disable=bool(quiet), leave=False, dynamic_ncols=True)
