"""Head options given as KEY=VALUE text (`fakescope train --set`, `fakescope leave-out --set`)."""
from __future__ import annotations

import json
from typing import Iterable


def parse_options(pairs: Iterable[str]) -> dict:
    """KEY=VALUE strings -> dict; values read as JSON when they parse (0.9, true, [1,2]), else as text."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE, got {pair!r}")
        try:
            out[key.strip()] = json.loads(value.lower() if value.lower() in ("true", "false") else value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out
