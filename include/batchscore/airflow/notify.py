"""Send a run's alerts through Airflow's notifiers: the SMTP provider's, the Slack provider's, a JSON webhook.

A pipeline's ``notify:`` rules pick the channels for each event. Delivery is best effort by
contract: a notifier that fails is logged and skipped, so an unreachable mail server never fails,
retries or changes a run. Each event goes out once per run (claimed on the run record first).
The notifiers are called without rendering their fields as Jinja templates: an alert quotes
errors, and errors quote data, which must never run as template code.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from typing import Any
from urllib.parse import quote, urlencode

from airflow.sdk import BaseNotifier

from batchscore.pipeline.config import PipelineConfig
from batchscore.pipeline.notify import NotifyRule
from batchscore.run.alerts import Alert

log = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_SECONDS = 10


class WebhookNotifier(BaseNotifier):
    """POST an alert as JSON to the address of an HTTP connection (no HTTP provider needed).

    The connection gives the address as Airflow's HTTP connections do (a host with its scheme, or
    host, port and ``schema`` http/https), plus ``extra.endpoint`` for a path; a password is sent
    as a bearer token. The body is :meth:`Alert.to_json`. Non-2xx answers raise.
    """

    def __init__(self, *, conn_id: str, payload: dict[str, Any]) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.payload = payload

    def notify(self, context: Any) -> None:
        from airflow.sdk import Connection

        from batchscore.airflow.glue import tracking_uri_of

        conn = Connection.get(self.conn_id)
        url = tracking_uri_of(conn).rstrip("/") + "/" + str((conn.extra_dejson or {}).get("endpoint", "")).lstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"connection {self.conn_id}: {url[:80]!r} is not an http(s) address")
        headers = {"Content-Type": "application/json", "User-Agent": "batchscore-alerts"}
        if conn.password:
            headers["Authorization"] = f"Bearer {conn.password}"
        body = json.dumps(self.payload).encode()
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 (checked above)
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_SECONDS) as response:  # noqa: S310
            if not 200 <= response.status < 300:
                raise RuntimeError(f"webhook {self.conn_id} answered HTTP {response.status}")


def _slack_escaped(text: str) -> str:
    """Slack's mrkdwn reads <, > and & as markup: escaped as its docs say."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def notifier_for(rule: NotifyRule, alert: Alert) -> BaseNotifier:
    """The provider's notifier for one rule, carrying this alert."""
    if rule.via == "smtp":
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        return SmtpNotifier(
            to=list(rule.to),
            from_email=rule.from_email,
            subject=alert.subject,
            html_content=alert.html(),
            smtp_conn_id=rule.conn_id,
        )
    if rule.via == "slack_webhook":
        from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

        return SlackWebhookNotifier(slack_webhook_conn_id=rule.conn_id, text=_slack_escaped(alert.text()))
    return WebhookNotifier(conn_id=rule.conn_id, payload=alert.to_json())


def deliver(config: PipelineConfig, alert: Alert, context: Any) -> list[str]:
    """Send ``alert`` through every rule that takes its event; the ``via:conn_id`` of each delivered one.

    Never raises: a rule that fails is logged with its cause, and the others are still tried.
    """
    delivered = []
    for rule in config.notify:
        if alert.event not in rule.on:
            continue
        try:
            notifier_for(rule, alert).notify(context)
        except Exception as exc:
            log.warning(
                "alert %s of run %s not delivered via %s (%s): %s",
                alert.event,
                alert.run_id,
                rule.via,
                rule.conn_id,
                exc,
                exc_info=True,
            )
        else:
            delivered.append(f"{rule.via}:{rule.conn_id}")
            log.info("alert %s of run %s sent via %s (%s)", alert.event, alert.run_id, rule.via, rule.conn_id)
    return delivered


def ui_base() -> str:
    """Airflow's UI root as users reach it (``[api] base_url``)."""
    from airflow.sdk.configuration import conf

    return str(conf.get("api", "base_url", fallback="http://localhost:8080/")).rstrip("/")


def run_page(pipeline: str, run_id: str) -> str:
    """The Scoring view's page of one run (plugins/scoring_ui, mounted at /scoring)."""
    return f"{ui_base()}/scoring/run?{urlencode({'pipeline': pipeline, 'run_id': run_id}, quote_via=quote)}"


def notify_once(config: PipelineConfig, alert: Alert, context: Any, scores_url: str) -> list[str]:
    """Claim ``alert.event`` on the run record, then deliver it; nothing if it was sent already or no rule takes it."""
    from batchscore.sink.run_record import claim_alert

    if not any(alert.event in rule.on for rule in config.notify):
        return []
    try:
        claimed = claim_alert(scores_url, pipeline=config.name, run_id=alert.run_id, event=alert.event)
    except Exception:
        log.warning("could not claim alert %s of run %s; sending it anyway", alert.event, alert.run_id, exc_info=True)
        claimed = True
    if not claimed:
        log.info("alert %s of run %s was already sent", alert.event, alert.run_id)
        return []
    return deliver(config, alert, context)
