"""Derived names on a real PostgreSQL at the 63-character limit: a shadow beside its table, tables sharing a prefix,
and a window partition named by an older version found, published and renamed."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import psycopg
import pytest

from batchscore.pipeline.config import PipelineConfig
from batchscore.pipeline.model_config import ShadowConfig
from batchscore.pipeline.table_names import legacy_partition_name, lineage_view, partition_name
from batchscore.pipeline.windows import Window
from batchscore.run.in_process import run_pipeline
from batchscore.run.planning import Endpoints
from tests.conftest import CHALLENGER, WAREHOUSE_END, Services, day_window
from tests.integration.helpers import churn_config, expected_scores, stored_scores

pytestmark = pytest.mark.integration
WINDOW = Window(*day_window(WAREHOUSE_END - timedelta(days=5)))
PREFIX = "churn_scores_with_a_name_long_enough_to_meet_the_limit_"  # 55 characters
assert len(PREFIX) == 55


def _pipeline(name: str, table: str, *, shadow: bool = False) -> PipelineConfig:
    base = churn_config()
    config = base.model_copy(update={"name": name, "output": base.output.model_copy(update={"table": table})})
    if shadow:
        config = config.model_copy(update={"shadow": ShadowConfig(name=CHALLENGER, version="challenger")})
    return config


def _endpoints(services: Services) -> Endpoints:
    return Endpoints(services.warehouse_url, services.scores_url, services.registry)


def _partitions(services: Services, table: str) -> list[str]:
    with psycopg.connect(services.scores_url) as conn:
        rows = conn.execute(
            "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass ORDER BY 1",
            (table,),
        ).fetchall()
    return [r[0] for r in rows]


def test_a_56_character_table_with_a_63_character_shadow_and_a_neighbour_sharing_55_characters(
    services: Services,
) -> None:
    first = _pipeline("names_first", f"scoring.{PREFIX}a", shadow=True)
    neighbour = _pipeline("names_neighbour", f"scoring.{PREFIX}b")
    assert len(first.shadow_table.split(".")[1]) == 63
    run_pipeline(first, _endpoints(services), window=WINDOW, run_id="it__names_first", max_slices=2)
    run_pipeline(neighbour, _endpoints(services), window=WINDOW, run_id="it__names_neighbour")

    expected, _ = expected_scores(services.warehouse_url, services.registry, WINDOW.start, WINDOW.end)
    for config, run_id in ((first, "it__names_first"), (neighbour, "it__names_neighbour")):
        stored = stored_scores(services.scores_url, config.output.table, WINDOW.start, WINDOW.end)  # its lineage view
        assert set(stored["run_id"]) == {run_id}, f"{lineage_view(config.output.table)} reads another table"
        np.testing.assert_allclose(stored.loc[expected.index, "score"], expected["score"], rtol=0, atol=1e-12)
    shadow = stored_scores(services.scores_url, first.shadow_table, WINDOW.start, WINDOW.end)
    assert set(shadow["model_name"]) == {CHALLENGER}
    assert len(shadow) == len(expected)

    views = {lineage_view(t) for t in (first.output.table, first.shadow_table, neighbour.output.table)}
    assert len(views) == 3
    assert all(len(v) <= 63 for v in views)
    made = {t: _partitions(services, t) for t in (first.output.table, first.shadow_table, neighbour.output.table)}
    for table, partitions in made.items():
        assert partitions == [partition_name(table.split(".")[1], WINDOW)]
    assert len({p for partitions in made.values() for p in partitions}) == 3


def test_a_window_partition_named_by_an_older_version_is_published_into_and_renamed(services: Services) -> None:
    config = _pipeline("names_legacy", f"scoring.{PREFIX}legacy")
    table = config.output.table_name
    run_pipeline(config, _endpoints(services), window=WINDOW, run_id="it__names_legacy_old")
    legacy, current = legacy_partition_name(table, WINDOW), partition_name(table, WINDOW)
    assert legacy != current
    with psycopg.connect(services.scores_url, autocommit=True) as conn:  # as the older version had named it
        conn.execute(f'ALTER TABLE scoring."{current}" RENAME TO "{legacy}"')
    assert _partitions(services, config.output.table) == [legacy]

    run_pipeline(config, _endpoints(services), window=WINDOW, run_id="it__names_legacy_new")
    assert _partitions(services, config.output.table) == [current]
    stored = stored_scores(services.scores_url, config.output.table, WINDOW.start, WINDOW.end)
    assert set(stored["run_id"]) == {"it__names_legacy_new"}
    expected, _ = expected_scores(services.warehouse_url, services.registry, WINDOW.start, WINDOW.end)
    assert len(stored) == len(expected)
