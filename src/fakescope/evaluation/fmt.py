"""Metric formatting for tables; kept apart from report.py so the CLI starts without numpy."""
from __future__ import annotations


def fmt_metric(v) -> str:
    """A metric for a table cell: 4 decimals; missing or NaN (a class absent) as "-"."""
    return "-" if v is None or v != v else f"{v:.4f}"
