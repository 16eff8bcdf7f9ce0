"""Every table a pipeline writes is owned, and claimed atomically in plan (real PostgreSQL)."""

from __future__ import annotations

import threading
from datetime import timedelta

import psycopg
import pytest

from batchscore.pipeline.config import PipelineConfig
from batchscore.pipeline.model_config import ShadowConfig
from batchscore.pipeline.windows import Window
from batchscore.run.in_process import run_pipeline
from batchscore.run.planning import Endpoints, plan_run
from batchscore.sink import run_record
from batchscore.sink.ownership import TableOwned, claim_tables, hand_over_tables
from tests.conftest import CHALLENGER, WAREHOUSE_END, Services, day_window
from tests.integration.helpers import churn_config, stored_scores

pytestmark = pytest.mark.integration
WINDOW = Window(*day_window(WAREHOUSE_END - timedelta(days=7)))


def _pipeline(name: str, table: str, *, shadow: bool = False) -> PipelineConfig:
    base = churn_config()
    config = base.model_copy(update={"name": name, "output": base.output.model_copy(update={"table": table})})
    if shadow:
        config = config.model_copy(update={"shadow": ShadowConfig(name=CHALLENGER, version="challenger")})
    return config


def _endpoints(services: Services) -> Endpoints:
    return Endpoints(services.warehouse_url, services.scores_url, services.registry)


def _owners(services: Services, prefix: str) -> dict[str, tuple[str, str]]:
    with psycopg.connect(services.scores_url) as conn:
        rows = conn.execute(
            "SELECT table_name, pipeline, role FROM scoring.table_owners WHERE table_name LIKE %s", (f"{prefix}%",)
        ).fetchall()
    return {t: (p, r) for t, p, r in rows}


def test_a_pipeline_whose_output_table_is_anothers_shadow_is_refused_in_plan(services: Services) -> None:
    owner = _pipeline("owned_champion", "scoring.owned_scores", shadow=True)
    run_pipeline(owner, _endpoints(services), window=WINDOW, run_id="it__owned_first")
    shadow_before = stored_scores(services.scores_url, owner.shadow_table, WINDOW.start, WINDOW.end)
    assert _owners(services, "scoring.owned_scores") == {
        "scoring.owned_scores": ("owned_champion", "scores"),
        "scoring.owned_scores_lineage": ("owned_champion", "lineage view"),
        "scoring.owned_scores_shadow": ("owned_champion", "shadow"),
        "scoring.owned_scores_shadow_lineage": ("owned_champion", "lineage view"),
    }

    intruder = _pipeline("owned_intruder", "scoring.owned_scores_shadow")
    with pytest.raises(
        TableOwned,
        match=r"scoring\.owned_scores_shadow \(its scores\), the shadow of pipeline "
        r"owned_champion",
    ):
        plan_run(intruder, _endpoints(services), window=WINDOW, run_id="it__owned_intruder")
    after = stored_scores(services.scores_url, owner.shadow_table, WINDOW.start, WINDOW.end)
    assert after.equals(shadow_before), "the shadow's window is untouched"
    assert "scoring.owned_scores_shadow_shadow" not in _owners(services, "scoring.owned_scores")


def test_two_pipelines_claiming_one_new_table_at_once_cannot_both_win(services: Services) -> None:
    """One INSERT ... ON CONFLICT: the second claim waits on the first's row, then sees it (no check-then-act)."""
    first, second = _pipeline("race_a", "scoring.race_scores"), _pipeline("race_b", "scoring.race_scores")
    outcome: dict[str, BaseException | None] = {}
    with psycopg.connect(services.scores_url, autocommit=True) as setup:
        run_record.apply_schema(setup)
    with psycopg.connect(services.scores_url) as slow:  # the first claim, not yet committed
        claim_tables(slow, first)

        def other() -> None:
            with psycopg.connect(services.scores_url, autocommit=True) as conn:
                try:
                    claim_tables(conn, second)
                    outcome["b"] = None
                except TableOwned as exc:
                    outcome["b"] = exc

        racer = threading.Thread(target=other)
        racer.start()
        racer.join(timeout=2)
        assert racer.is_alive(), "the second claim waits for the first"
        slow.commit()
    racer.join(timeout=30)
    assert isinstance(outcome["b"], TableOwned)
    assert "the scores of pipeline race_a" in str(outcome["b"])
    assert _owners(services, "scoring.race_scores")["scoring.race_scores"] == ("race_a", "scores")


def test_a_table_published_before_owners_were_recorded_goes_to_its_publisher(services: Services) -> None:
    publisher = _pipeline("legacy_owner", "scoring.legacy_owned_scores")
    run_pipeline(publisher, _endpoints(services), window=WINDOW, run_id="it__legacy_owner")
    with psycopg.connect(services.scores_url, autocommit=True) as conn:  # as a database of an older version
        conn.execute("DELETE FROM scoring.table_owners WHERE table_name LIKE 'scoring.legacy_owned_scores%'")
    newcomer = _pipeline("legacy_newcomer", "scoring.legacy_owned_scores")
    with pytest.raises(TableOwned, match="the scores of pipeline legacy_owner"):
        plan_run(newcomer, _endpoints(services), window=WINDOW, run_id="it__legacy_newcomer")
    assert _owners(services, "scoring.legacy_owned_scores")["scoring.legacy_owned_scores"] == (
        "legacy_owner",
        "scores",
    )

    with psycopg.connect(services.scores_url, autocommit=True) as conn:
        handed = hand_over_tables(conn, "legacy_owner", "legacy_newcomer")
    assert handed == ["scoring.legacy_owned_scores", "scoring.legacy_owned_scores_lineage"]
    plan_run(newcomer, _endpoints(services), window=WINDOW, run_id="it__legacy_newcomer")
    assert _owners(services, "scoring.legacy_owned_scores")["scoring.legacy_owned_scores"][0] == "legacy_newcomer"


def test_the_tables_commands_list_owners_and_hand_them_over(services: Services, capsys: pytest.CaptureFixture) -> None:
    from batchscore.cli.main import main

    config = _pipeline("cli_owner", "scoring.cli_owned_scores")
    plan_run(config, _endpoints(services), window=WINDOW, run_id="it__cli_owner")
    assert main(["tables", "owners", "--scores-url", services.scores_url]) == 0
    listed = [line.split("\t")[:3] for line in capsys.readouterr().out.splitlines()]
    assert ["scoring.cli_owned_scores", "cli_owner", "scores"] in listed
    assert main(["tables", "hand-over", "cli_owner", "cli_heir", "--scores-url", services.scores_url]) == 0
    assert "scoring.cli_owned_scores: now owned by pipeline cli_heir" in capsys.readouterr().out
    assert main(["tables", "hand-over", "cli_owner", "cli_heir", "--scores-url", services.scores_url]) == 1
    assert "pipeline cli_owner owns no table" in capsys.readouterr().err
