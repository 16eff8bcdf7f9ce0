"""The notify: section: rules validated at parse time, each error naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from batchscore.pipeline.config import ConfigError, parse_config

REPO = Path(__file__).resolve().parents[3]


def churn_with(notify_yaml: str) -> object:
    data = yaml.safe_load((REPO / "include" / "pipelines" / "churn.yaml").read_text())
    data["notify"] = yaml.safe_load(notify_yaml)
    return parse_config(data, Path("include/pipelines/churn.yaml"))


def test_a_bare_yaml_on_key_is_read_as_on() -> None:
    config = churn_with(
        """
- on: [failure, drift_hold]
  via: smtp
  conn_id: smtp_default
  to: oncall@example.com
- on: deadline_missed
  via: slack_webhook
  conn_id: slack_alerts
"""
    )
    rules = config.notify  # type: ignore[attr-defined]
    assert [(r.on, r.via, r.conn_id, r.to) for r in rules] == [
        (("failure", "drift_hold"), "smtp", "smtp_default", ("oncall@example.com",)),
        (("deadline_missed",), "slack_webhook", "slack_alerts", ()),
    ]


@pytest.mark.parametrize(
    ("notify", "message"),
    [
        ("[{on: [failure], via: smtp, conn_id: s}]", "notify.0: via smtp needs to: [addresses]"),
        ("[{on: [failure], via: webhook, conn_id: w, to: [a@b.io]}]", "to and from_email are for via smtp"),
        ("[{on: [failure], via: smtp, conn_id: s, to: [not-an-address]}]", "'not-an-address' is not an e-mail address"),
        ("[{on: [late], via: webhook, conn_id: w}]", "notify.0.on.0: Input should be 'failure'"),
        ("[{on: [], via: webhook, conn_id: w}]", "notify.0.on: Tuple should have at least 1 item"),
        ("[{on: [failure, failure], via: webhook, conn_id: w}]", "an event is listed more than once"),
        ("[{on: [failure], via: pager, conn_id: w}]", "notify.0.via: Input should be 'smtp', 'slack_webhook'"),
        ("[{on: [failure], via: webhook, conn_id: 'bad id'}]", "notify.0.conn_id: String should match pattern"),
    ],
)
def test_bad_rules_name_the_file_and_field(notify: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        churn_with(notify)
    assert str(caught.value).startswith("include/pipelines/churn.yaml: notify.0")
    assert message in str(caught.value)
