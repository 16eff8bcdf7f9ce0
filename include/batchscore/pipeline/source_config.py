"""The ``source:`` block: where a window's feature rows come from, and when they have landed."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, field_validator

from batchscore.pipeline.config_rules import Strict, bounded_by_window


class SourceConfig(Strict):
    """Where the feature rows come from: an Airflow connection and a windowed query."""

    conn_id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    query: str
    # Readiness: a SELECT over the window whose first value says the window's rows have landed;
    # the run waits (deferred, on the triggerer) before plan, polling, and fails after the timeout.
    ready_when: str | None = None
    poke_interval_seconds: Annotated[int, Field(ge=5, le=3600)] = 60
    ready_timeout_minutes: Annotated[int, Field(ge=1, le=7 * 24 * 60)] = 360

    @field_validator("ready_when")
    @classmethod
    def _ready_check(cls, check: str | None) -> str | None:
        if check is None:
            return None
        text = check.strip().rstrip(";").strip()
        if not re.match(r"(?is)^(select|with)\b", text) or ";" in text:
            raise ValueError("must be a single SELECT statement whose first value is true when the window has landed")
        names = set(re.findall(r"(?<![:\w]):([A-Za-z_]\w*)", text))
        if not names & {"window_start", "window_end"} or names - {"window_start", "window_end"}:
            raise ValueError(
                "must use :window_start and/or :window_end, and no other :parameters "
                f"(found {', '.join(sorted(names)) or 'none'})"
            )
        return text

    @field_validator("query")
    @classmethod
    def _bounded_by_window(cls, query: str) -> str:
        return bounded_by_window(query)
