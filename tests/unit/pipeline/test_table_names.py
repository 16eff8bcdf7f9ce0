"""Derived names: within PostgreSQL's 63 bytes, readable, and apart for tables that share a prefix or a shadow."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from batchscore.pipeline.table_names import (
    MAX_IDENTIFIER,
    derived_name,
    legacy_lineage_view,
    legacy_partition_name,
    legacy_slice_table_name,
    lineage_view,
    partition_name,
    slice_rejects_name,
    slice_table_name,
    table_hash,
)
from batchscore.pipeline.windows import Window

DAY = Window(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC))
HALF_DAY = Window(DAY.start, DAY.start + timedelta(hours=12))


def every_name(table: str, lineage_id: int = 9_223_372_036_854_775_807) -> list[str]:
    """Everything made beside ``table`` (the largest lineage id a bigint holds: the longest slice names)."""
    return [
        lineage_view(f"scoring.{table}"),
        partition_name(table, DAY),
        partition_name(table, HALF_DAY),
        slice_table_name(table, lineage_id),
        slice_rejects_name(table, lineage_id),
        slice_table_name(table, 7),
        slice_rejects_name(table, 7),
    ]


def test_short_tables_keep_the_names_earlier_versions_gave() -> None:
    assert lineage_view("scoring.churn_scores") == "churn_scores_lineage" == legacy_lineage_view("scoring.churn_scores")
    assert (
        slice_table_name("churn_scores", 1234) == "churn_scores_l1234" == legacy_slice_table_name("churn_scores", 1234)
    )
    assert slice_rejects_name("churn_scores", 1234) == "churn_scores_l1234_rej"
    assert partition_name("churn_scores", DAY) == legacy_partition_name("churn_scores", DAY)
    assert partition_name("churn_scores", DAY).startswith("churn_scores_w202611010000_")


def test_a_63_character_table_gets_names_within_the_limit_that_keep_its_start_and_the_suffix() -> None:
    table = "t" * MAX_IDENTIFIER
    for name in every_name(table):
        assert len(name.encode()) <= MAX_IDENTIFIER, name
        assert name.startswith("t" * 20)
        assert f"_{table_hash(table)}_" in name
    assert lineage_view(f"scoring.{table}").endswith("_lineage")
    assert partition_name(table, DAY).endswith(partition_name("x", DAY).removeprefix("x_"))


@pytest.mark.parametrize("length", [36, 40, 41, 45, 50, 55, 56])
def test_a_table_and_its_shadow_never_share_a_derived_name(length: int) -> None:
    """Was: a table of 36-56 characters and its _shadow got one partition name, so every publish rolled back."""
    table = ("churn_scores_" + "x" * 60)[:length]
    shadow = f"{table}_shadow"
    assert len(shadow) <= MAX_IDENTIFIER
    assert not set(every_name(table)) & set(every_name(shadow))
    if length >= 36:
        assert legacy_partition_name(table, DAY) == legacy_partition_name(shadow, DAY), "the old rule's collision"


def test_tables_sharing_a_long_prefix_never_share_a_lineage_view_or_partition() -> None:
    """Was: two tables sharing a 55-character prefix shared one lineage view, and `models which` read the other."""
    prefix = "p" * 55
    tables = [f"{prefix}_a", f"{prefix}_b", f"{prefix}_ab", "p" * 62 + "a", "p" * 62 + "b", "p" * 63]
    assert legacy_lineage_view(f"s.{tables[0]}") == legacy_lineage_view(f"s.{tables[1]}"), "the old rule's collision"
    names = [every_name(t) for t in tables]
    for ours, theirs in itertools.combinations(names, 2):
        assert not set(ours) & set(theirs)


def test_no_two_tables_of_one_alphabet_share_any_derived_name_at_any_length() -> None:
    tables = [c * n for c in "ab" for n in range(1, MAX_IDENTIFIER + 1)] + ["a" * n + "_shadow" for n in range(1, 57)]
    seen: dict[str, str] = {}
    for table in tables:
        for name in every_name(table):
            assert len(name.encode()) <= MAX_IDENTIFIER
            assert seen.setdefault(name, table) == table, f"{table} and {seen[name]} both derive {name}"


def test_a_suffix_too_long_for_any_table_is_refused() -> None:
    with pytest.raises(ValueError, match="leaves no room"):
        derived_name("t" * 63, "s" * 60)
