"""HTML pages: Jinja templates (autoescaped) and the few formats they share.

Chart data reaches the page as JSON inside ``<script type="application/json">`` (Jinja's
``tojson`` escapes ``<``, ``>`` and ``&``), and ``static/scoring.js`` draws it: no inline
script, no value pasted into JavaScript.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from batchscore.reports.performance_views import METRIC_TITLES
from batchscore.reports.run_charts import window_label

TEMPLATES = Path(__file__).resolve().parent / "templates"


def number(value: Any) -> str:
    """Counts with thousands separators; blank for a missing value."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 10 else f"{value:,.1f}"
    return f"{value:,}"


def seconds(value: float | None) -> str:
    """Two decimals under 10 s (small windows take fractions of a second per stage), one above."""
    if value is None:
        return ""
    return f"{value:.2f}" if value < 10 else f"{value:,.1f}"


def percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}%"


def window(start: datetime | None, end: datetime | None) -> str:
    """``2026-10-29 → 2026-10-30`` (end exclusive); a window not yet known is blank."""
    if start is None or end is None:
        return ""
    return f"{window_label(start)} → {window_label(end)}"


def timestamp(value: datetime | None) -> str:
    return "" if value is None else f"{value:%Y-%m-%d %H:%M:%S} UTC"


_env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,  # a misspelt name in a template fails its test instead of rendering blank
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters.update(number=number, seconds=seconds, percent=percent, timestamp=timestamp)
_env.globals.update(window=window, metric_titles=METRIC_TITLES)


def render(template: str, **context: Any) -> str:
    return _env.get_template(template).render(**context)
