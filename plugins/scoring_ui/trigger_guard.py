"""Refuse a scoring DAG's trigger whose window ``plan`` would refuse, before the run exists.

Airflow validates each trigger-form field on its own (type, ``pattern``); a rule between two
fields (the end after the start, both or neither) or against the clock (not in the future) has
no place in a Param's JSON schema. This ASGI middleware, registered as the plugin's
``fastapi_root_middlewares``, looks at ``POST /api/v2/dags/score_<pipeline>/dagRuns`` (what the
trigger form and the REST API send), checks the window with the engine's own rules
(:func:`batchscore.airflow.glue.check_trigger_conf`), and answers 400 with the reason, which
the trigger form shows. Anything else, and any request from a user who may not trigger that
DAG (not logged in, or the auth manager refuses ``POST`` on its runs, as Airflow's own trigger
endpoint asks), passes through untouched: Airflow then answers it as usual (401 or 403), so the
guard tells nobody anything about a pipeline they may not trigger, not even that it exists.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TRIGGER_PATH = re.compile(r"^(?P<base>.*)/api/v2/dags/score_(?P<pipeline>[a-z_][a-z0-9_]{0,62})/dagRuns/?$")
BACKFILL_PATH = re.compile(r"^(?P<base>.*)/api/v2/backfills(/dry_run)?/?$")
SCORING_DAG = re.compile(r"^score_(?P<pipeline>[a-z_][a-z0-9_]{0,62})$")
MAX_BODY = 1 << 20  # a trigger body is a few hundred bytes; a larger one is left to Airflow to refuse


class TriggerWindowGuard:
    """ASGI middleware: 400 for a scoring trigger whose window cannot be scored, before Airflow creates the run.

    Also for a backfill of a scoring DAG whose run conf names a window: a backfill scores each
    run's own data interval, so such a window would be silently ignored (``plan`` ignores it).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        trigger, backfill = TRIGGER_PATH.match(path), BACKFILL_PATH.match(path)
        if (trigger is None and backfill is None) or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        body, more = await _read_body(receive)
        replay = _replaying(body, more, receive)
        if more:
            problem = None
        elif trigger is not None:
            problem = await _problem(scope, trigger["pipeline"], body)
        else:
            problem = await _backfill_problem(scope, body)
        if problem is None:
            await self.app(scope, replay, send)
            return
        payload = json.dumps({"detail": problem}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The request body up to ``MAX_BODY``; True when more is left unread."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), False
        if size > MAX_BODY:
            return b"".join(chunks), True


def _replaying(body: bytes, more: bool, receive: Receive) -> Receive:
    """A ``receive`` that hands the already-read body on first, then the rest of the request."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return replay


async def _user(scope: Scope) -> Any:
    """The request's Airflow user (Bearer header, else the UI's cookie), or None without a valid token."""
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
    from airflow.api_fastapi.core_api.security import resolve_user_from_token
    from fastapi import HTTPException
    from starlette.requests import Request

    request = Request(scope)
    header = request.headers.get("authorization", "")
    token = header[7:] if header.lower().startswith("bearer ") else request.cookies.get(COOKIE_NAME_JWT_TOKEN)
    if not token:
        return None
    try:
        return await resolve_user_from_token(token)
    except HTTPException:
        return None


async def _may_trigger(scope: Scope, pipeline: str) -> bool:
    """True when the request is from a user the auth manager lets trigger the pipeline's DAG."""
    from airflow.api_fastapi.app import get_auth_manager

    from scoring_ui.access import may_trigger

    user = await _user(scope)
    return user is not None and may_trigger(get_auth_manager(), user, pipeline)


def _window_request(body: bytes) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(request, conf) when the body asks for a window with well-formed fields; None leaves it to Airflow.

    Malformed JSON, or a field malformed on its own, is Airflow's to refuse: its check of each
    Param names the field.
    """
    try:
        request = json.loads(body or b"{}")
    except ValueError:
        return None
    conf = request.get("conf") if isinstance(request, dict) else None
    if not isinstance(conf, dict) or not ({"window_start", "window_end"} & conf.keys()):
        return None
    from batchscore.airflow.dag_factory import ISO_DATE_TIME

    values = (conf.get("window_start"), conf.get("window_end"))
    if not all(v is None or (isinstance(v, str) and re.match(ISO_DATE_TIME, v)) for v in values):
        return None
    return request, conf


async def _problem(scope: Scope, pipeline: str, body: bytes) -> str | None:
    """Why this trigger's window cannot be scored, or None to let it through."""
    from batchscore import settings
    from batchscore.airflow.glue import check_trigger_conf
    from batchscore.errors import PermanentError, one_line
    from batchscore.pipeline.config import ConfigError, load_config

    asked = _window_request(body)
    if asked is None or not await _may_trigger(scope, pipeline):
        return None
    path = settings.pipelines_dir() / f"{pipeline}.yaml"
    if not path.exists():
        return None
    request, conf = asked
    try:
        config = load_config(path)
        check_trigger_conf(config, conf, _instant(request.get("run_after")) or datetime.now(UTC))
    except ConfigError:
        return None  # the DAG's own import error says what is wrong
    except PermanentError as exc:
        log.info("refused a trigger of score_%s: %s", pipeline, exc)
        return f"Invalid window for score_{pipeline}: {one_line(str(exc))}"
    return None


async def _backfill_problem(scope: Scope, body: bytes) -> str | None:
    """Why this backfill of a scoring DAG would not do what it says (a window in its run conf), or None."""
    try:
        request = json.loads(body or b"{}")
    except ValueError:
        return None
    if not isinstance(request, dict) or not isinstance(request.get("dag_id"), str):
        return None
    match = SCORING_DAG.match(request["dag_id"])
    conf = request.get("dag_run_conf")
    if match is None or not isinstance(conf, dict):
        return None
    named = [k for k in ("window_start", "window_end") if conf.get(k) not in (None, "")]
    if not named or not await _may_trigger(scope, match["pipeline"]):
        return None
    log.info("refused a backfill of %s with %s in its run conf", request["dag_id"], ", ".join(named))
    return (
        f"Invalid backfill of {request['dag_id']}: each backfill run scores its own data interval, so "
        f"{' and '.join(named)} in the run conf would be ignored; leave them out and choose the dates "
        "with the backfill's from/to (or trigger one run with that window)"
    )


def _instant(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
