"""A pipeline's ``schedule:``: a cron string (the default), or the upstream Asset whose updates start a run.

``schedule: "0 2 * * *"`` keeps the interval timetable (each run scores the interval that just
closed). ``schedule: {asset: <uri or name>}`` runs when an upstream DAG updates that Asset; the
window comes from the event (its ``extra`` ``window_start``/``window_end``, else the producing run's
data interval). ``schedule: {asset: <uri>, partitioned: true, period: 1d}`` follows a partitioned
upstream (Airflow 3.2+ ``CronPartitionTimetable``): each partition is one run scoring
[partition_date, partition_date + period). Everything is checked here, at parse time; the Airflow
objects are built by ``batchscore.airflow.schedules`` (the engine never imports Airflow).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import BeforeValidator, ValidationError, field_validator

from batchscore.pipeline.config_rules import Strict, valid_cron

# Periods whose grid is a cron: hours that divide the day, or the day itself (in the pipeline's time zone).
PERIOD = re.compile(r"^(?:(1|2|3|4|6|8|12)h|1d)$")
# An Asset URI as Airflow accepts one (a scheme, then no spaces or control characters), or an Asset name.
ASSET_URI = re.compile(r"^(?!airflow://)[a-z][a-z0-9+.-]{0,30}://[^\s\x00-\x1f\x7f]{1,1400}$")
ASSET_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:@/+-]{0,199}$")
# The strftime directives a partition key may use: the ones Airflow's temporal mappers parse back.
KEY_DIRECTIVES = re.compile(r"%[YmdHMS]")
KEY_LITERALS = re.compile(r"^[-T :_./]*$")

Mapper = Literal["start_of_day", "start_of_hour", "identity"]


class AssetSchedule(Strict):
    """Run when ``asset`` is updated; with ``partitioned``, once per partition of ``period``.

    ``key_format`` is the upstream producer's partition key format (``CronPartitionTimetable``'s
    ``key_format``, ``%Y-%m-%dT%H:%M:%S`` by default); keys are read in the pipeline's time zone.
    """

    asset: str
    # A plain schedule declares the Asset itself (see batchscore.airflow.schedules.upstream_asset): when
    # the producer's Asset has a name and a URI that differ, ``asset`` is the URI and ``name`` its name.
    name: str | None = None
    partitioned: bool = False
    period: str = "1d"
    key_format: str = "%Y-%m-%dT%H:%M:%S"

    @field_validator("asset")
    @classmethod
    def _asset(cls, asset: str) -> str:
        if "://" in asset:
            if not ASSET_URI.match(asset):
                raise ValueError(f"{asset[:80]!r} is not a valid Asset URI (scheme://path, no spaces, not airflow://)")
        elif not ASSET_NAME.match(asset):
            raise ValueError(f"{asset[:80]!r} is not a valid Asset name or URI (letters, digits, _.:@/+-)")
        return asset

    @field_validator("name")
    @classmethod
    def _name(cls, name: str | None) -> str | None:
        if name is not None and not ASSET_NAME.match(name):
            raise ValueError(f"{name[:80]!r} is not a valid Asset name (letters, digits, _.:@/+-)")
        return name

    @field_validator("period")
    @classmethod
    def _period(cls, period: str) -> str:
        if not PERIOD.match(period):
            raise ValueError(f"{period[:20]!r} is not a supported period: 1h, 2h, 3h, 4h, 6h, 8h, 12h or 1d")
        return period

    @field_validator("key_format")
    @classmethod
    def _key_format(cls, key_format: str) -> str:
        directives = KEY_DIRECTIVES.findall(key_format)
        if len(key_format) > 40 or not KEY_LITERALS.match(KEY_DIRECTIVES.sub("", key_format)):
            raise ValueError(f"{key_format[:40]!r} may use only %Y %m %d %H %M %S and the separators -T :_./")
        if not {"%Y", "%m", "%d"} <= set(directives) or len(directives) != len(set(directives)):
            raise ValueError(f"{key_format!r} must hold %Y, %m and %d, each directive once")
        return key_format

    @property
    def is_uri(self) -> bool:
        return "://" in self.asset

    @property
    def period_delta(self) -> timedelta:
        return timedelta(days=1) if self.period == "1d" else timedelta(hours=int(self.period[:-1]))

    @property
    def grid_cron(self) -> str:
        """The cron of the period's boundaries: what a manual run without a window scores the last of."""
        if self.period == "1d":
            return "0 0 * * *"
        hours = int(self.period[:-1])
        return "0 * * * *" if hours == 1 else f"0 */{hours} * * *"

    @property
    def mapper(self) -> Mapper:
        """How an upstream key becomes ours: the start of its day or hour, else the key itself."""
        return {"1d": "start_of_day", "1h": "start_of_hour"}.get(self.period, "identity")  # type: ignore[return-value]

    @property
    def downstream_key_format(self) -> str:
        """The format of this pipeline's own partition keys (what a manual run's ``partition_key`` must use)."""
        return {"start_of_day": "%Y-%m-%d", "start_of_hour": "%Y-%m-%dT%H"}.get(self.mapper, self.key_format)


def _schedule_value(value: object) -> object:
    """A cron string (checked), or a mapping read as an :class:`AssetSchedule` with its errors on one line."""
    if isinstance(value, AssetSchedule):
        return value
    if isinstance(value, str):
        return valid_cron(value)
    if isinstance(value, Mapping):
        try:
            return AssetSchedule.model_validate(dict(value))
        except ValidationError as exc:
            problems = [
                f"{'.'.join(str(p) for p in e['loc']) or 'asset'}: {e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors()
            ]
            raise ValueError("; ".join(problems)) from None
    raise ValueError("must be a cron string or a mapping such as {asset: <uri>, partitioned: true, period: 1d}")


# PipelineConfig.schedule: pydantic runs the check above first, so errors read "schedule: period: ...".
Schedule = Annotated[str | AssetSchedule, BeforeValidator(_schedule_value)]


def grid_cron(schedule: str | AssetSchedule) -> str:
    """The cron whose ticks bound the pipeline's windows (a manual run without a window scores the last one)."""
    return schedule.grid_cron if isinstance(schedule, AssetSchedule) else schedule
