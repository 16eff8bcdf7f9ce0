"""The ``outcomes:`` and ``promotion:`` blocks: what the scores are judged by, and how a challenger is promoted."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import Field, field_validator

from batchscore.pipeline.config_rules import Strict, bounded_by_window, valid_cron

HORIZON = re.compile(r"^(?P<n>[1-9][0-9]{0,4})(?P<unit>[hdw])$")
_HORIZON_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


class OutcomesConfig(Strict):
    """What happened to the scored entities, to judge the scores by (:mod:`batchscore.run.evaluation`).

    ``query`` returns ``(key, outcome)`` for the entities scored in a window, bound by
    ``:window_start``/``:window_end`` as the source query is; ``horizon`` (``30d``, ``12h``,
    ``2w``) is how long after a window ends its outcomes are complete: a window is evaluated
    only once it has passed. ``positive``: the outcome value that counts as the positive class
    (default: the model's positive class), compared as text.
    """

    conn_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$")  # None: the source's connection
    query: str
    horizon: str
    positive: str | None = Field(default=None, max_length=200)

    @field_validator("query")
    @classmethod
    def _bounded_by_window(cls, query: str) -> str:
        return bounded_by_window(query)

    @field_validator("horizon")
    @classmethod
    def _duration(cls, horizon: str) -> str:
        if not HORIZON.match(horizon):
            raise ValueError(f"{horizon!r} must be a whole number of hours, days or weeks: 12h, 30d, 2w")
        return horizon

    @field_validator("positive", mode="before")
    @classmethod
    def _positive_as_text(cls, value: object) -> object:
        return str(value).lower() if isinstance(value, bool) else str(value) if isinstance(value, int) else value

    @property
    def horizon_delta(self) -> timedelta:
        match = HORIZON.match(self.horizon)
        assert match is not None  # checked by the validator
        return int(match["n"]) * _HORIZON_UNITS[match["unit"]]


class PromotionRequirement(Strict):
    """A bar the challenger should clear, stated in the approval request: a person still decides."""

    metric: Literal["roc_auc", "pr_auc", "log_loss", "brier", "rmse", "mae", "r2"]
    min_gain: Annotated[float, Field(ge=0.0, le=1e9)] = 0.0
    windows: Annotated[int, Field(ge=1, le=366)] = 7


class PromotionConfig(Strict):
    """How ``promote_<name>`` asks for the challenger's promotion (needs ``shadow`` and ``outcomes``).

    ``windows``: the last N evaluated windows the evidence covers; ``timeout_hours``: an unanswered
    request expires then, changing nothing; ``schedule``: a cron to ask on (None: by hand only).
    """

    windows: Annotated[int, Field(ge=1, le=366)] = 7
    timeout_hours: Annotated[float, Field(gt=0.0, le=24 * 30)] = 72.0
    schedule: str | None = None
    requires: PromotionRequirement | None = None

    @field_validator("schedule")
    @classmethod
    def _cron(cls, schedule: str | None) -> str | None:
        return None if schedule is None else valid_cron(schedule)
