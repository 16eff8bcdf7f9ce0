"""source.ready_when: one SELECT over the window's bound parameters, refused otherwise with the field named."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from batchscore.pipeline.config import ConfigError, parse_config
from batchscore.pipeline.windows import Window
from batchscore.source.readiness import UpstreamNotLanded, check_ready, not_landed

REPO = Path(__file__).resolve().parents[3]


def churn_source(**source: object) -> object:
    data = yaml.safe_load((REPO / "include" / "pipelines" / "churn.yaml").read_text())
    data["source"].update(source)
    return parse_config(data, Path("include/pipelines/churn.yaml"))


def test_a_check_with_one_bound_and_a_cast_is_accepted() -> None:
    check = "SELECT max(loaded_at)::timestamptz >= :window_end FROM etl.load_log WHERE table_name = 'x';"
    config = churn_source(ready_when=check, poke_interval_seconds=30, ready_timeout_minutes=90)
    source = config.source  # type: ignore[attr-defined]
    assert source.ready_when == check.rstrip(";")
    assert (source.poke_interval_seconds, source.ready_timeout_minutes) == (30, 90)


@pytest.mark.parametrize(
    ("check", "message"),
    [
        ("DELETE FROM etl.load_log WHERE day < :window_start", "must be a single SELECT statement"),
        ("SELECT true; DROP TABLE x", "must be a single SELECT statement"),
        (
            "SELECT count(*) > 0 FROM t",
            "must use :window_start and/or :window_end, and no other :parameters (found none)",
        ),
        ("SELECT :window_end > :cutoff", "(found cutoff, window_end)"),
    ],
)
def test_bad_checks_are_refused_naming_the_field(check: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        churn_source(ready_when=check)
    assert "include/pipelines/churn.yaml: source.ready_when: " in str(caught.value)
    assert message in str(caught.value)


def test_the_check_binds_the_window_and_reads_its_first_value(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "landed.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE load_log (day_end TEXT)")
    window = Window(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC))
    check = "SELECT count(*) > 0 FROM load_log WHERE day_end >= :window_end"
    assert check_ready(f"sqlite:///{db}", check, window) is False
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO load_log VALUES ('2026-11-02 00:00:00.000000+00:00')")
    assert check_ready(f"sqlite:///{db}", check, window) is True
    assert check_ready(f"sqlite:///{db}", "SELECT NULL WHERE :window_start IS NOT NULL", window) is False


def test_the_timeout_error_is_permanent_and_alerts_as_upstream_timeout() -> None:
    window = Window(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC))
    error = not_landed(window, 360)
    assert isinstance(error, UpstreamNotLanded)
    assert str(error) == "upstream not landed for [2026-11-01T00:00:00+00:00, 2026-11-02T00:00:00+00:00) after 360 min"
    assert error.alert_event == "upstream_timeout"
