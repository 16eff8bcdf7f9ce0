"""Wait for a window's upstream data on the triggerer, without holding a worker slot.

``wait_for_upstream`` (the task before ``plan`` when a pipeline sets ``source.ready_when``) resolves
the run's window as ``plan`` will, then defers at once to :class:`UpstreamReadyTrigger`. The
trigger runs the check in a thread of the triggerer every ``poke_interval_seconds`` until it is true
or ``ready_timeout_minutes`` after the first deferral have passed (the deadline travels in the
trigger's kwargs, so a triggerer restart does not extend it). A timeout fails the task once, with
the cause "upstream not landed for [start, end) after N min", which the failure callback records
and sends as ``upstream_timeout``. The trigger's kwargs hold the connection id, never its URL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import BaseOperator
from airflow.triggers.base import BaseTrigger, TriggerEvent

from batchscore.pipeline.config import PipelineConfig


class UpstreamReadyTrigger(BaseTrigger):
    """Poll ``ready_when`` over [window_start, window_end) until true or ``deadline`` (ISO, UTC)."""

    def __init__(
        self, *, conn_id: str, ready_when: str, window_start: str, window_end: str, poke_interval: int, deadline: str
    ) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.ready_when = ready_when
        self.window_start = window_start
        self.window_end = window_end
        self.poke_interval = poke_interval
        self.deadline = deadline

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "conn_id": self.conn_id,
                "ready_when": self.ready_when,
                "window_start": self.window_start,
                "window_end": self.window_end,
                "poke_interval": self.poke_interval,
                "deadline": self.deadline,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from asgiref.sync import sync_to_async

        from batchscore.airflow.glue import connection_url
        from batchscore.pipeline.windows import Window
        from batchscore.source.readiness import check_ready

        window = Window(datetime.fromisoformat(self.window_start), datetime.fromisoformat(self.window_end))
        deadline = datetime.fromisoformat(self.deadline)
        url = await sync_to_async(connection_url)(self.conn_id)
        loop = asyncio.get_running_loop()
        polls = 0
        while True:
            polls += 1
            try:
                ready = await loop.run_in_executor(None, check_ready, url, self.ready_when, window)
            except Exception as exc:  # an unreachable warehouse is "not yet", until the deadline
                self.log.warning("readiness check for %s failed (poll %d): %s", window, polls, exc)
                ready = False
            if ready:
                self.log.info("upstream landed for %s after %d polls", window, polls)
                yield TriggerEvent({"status": "ready", "polls": polls})
                return
            if datetime.now(UTC) >= deadline:
                yield TriggerEvent({"status": "timeout", "polls": polls})
                return
            self.log.info("upstream not landed yet for %s (poll %d); next in %d s", window, polls, self.poke_interval)
            remaining = (deadline - datetime.now(UTC)).total_seconds()
            await asyncio.sleep(max(0.0, min(self.poke_interval, remaining)))


class WaitForUpstream(BaseOperator):
    """Defer until the run's window is ready (``source.ready_when``); fail once on the timeout."""

    def __init__(self, *, config: PipelineConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = config

    def execute(self, context: Any) -> None:
        from batchscore.airflow import glue

        source = self.config.source
        assert source.ready_when is not None  # the DAG adds this task only then
        with glue.failing_fast():
            window = glue.window_from_context(self.config, context)
        deadline = datetime.now(UTC) + timedelta(minutes=source.ready_timeout_minutes)
        self.defer(
            trigger=UpstreamReadyTrigger(
                conn_id=source.conn_id,
                ready_when=source.ready_when,
                window_start=window.start.isoformat(),
                window_end=window.end.isoformat(),
                poke_interval=source.poke_interval_seconds,
                deadline=deadline.isoformat(),
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        from batchscore.airflow import glue
        from batchscore.source.readiness import not_landed

        with glue.failing_fast():
            window = glue.window_from_context(self.config, context)
            if not event or event.get("status") != "ready":
                raise not_landed(window, self.config.source.ready_timeout_minutes)
        return {"window_start": window.start.isoformat(), "window_end": window.end.isoformat(), **event}
