"""Row-level validation: split a batch into rows the model can score and rejects with reasons.

Every check is vectorised over the Arrow batch; only rejected rows (bounded by the
pipeline's reject threshold) become Python objects, to be stored with their reason.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from batchscore.registry import FeatureSpec

_NUMBER = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"
REJECT_SCHEMA = pa.schema([("entity_key", pa.string()), ("reason", pa.string()), ("row_data", pa.string())])


@dataclass(frozen=True)
class ValidatedBatch:
    """``clean`` holds the scorable rows (numbers as float64); ``rejects`` the rest with reasons."""

    clean: pa.Table
    rejects: pa.Table


def _when(mask: pa.Array, reason: str | pa.Array) -> pa.Array:
    return pc.if_else(pc.fill_null(mask, False), reason, pa.scalar(None, pa.string()))


def _join_reasons(pieces: list[pa.Array]) -> pa.Array:
    """Join the non-NULL reasons of each row with '; ' (NULL where a row passed every check)."""
    joined = pieces[0]
    for piece in pieces[1:]:
        both = pc.binary_join_element_wise(joined, piece, "; ")
        joined = pc.coalesce(both, joined, piece)
    return joined


def _json_rows(table: pa.Table) -> list[str]:
    def plain(value: object) -> object:
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)  # jsonb has no NaN or Infinity
        return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)

    return [json.dumps({k: plain(v) for k, v in row.items()}) for row in table.to_pylist()]


def validate(
    table: pa.Table,
    key: str,
    features: tuple[FeatureSpec, ...],
    unseen_categories: Literal["reject", "score"] = "reject",
) -> ValidatedBatch:
    """Check NULLs, non-numbers, non-finite values and unseen categories, per row.

    Rejects keep the row as it arrived (before any conversion), as JSON, beside the reason.
    """
    original = table
    reasons: list[pa.Array] = [_when(pc.is_null(table.column(key)), f"{key} (entity key) is NULL")]
    converted: dict[str, pa.ChunkedArray] = {}
    for spec in features:
        column = table.column(spec.name)
        missing = pc.is_null(column)
        if spec.kind == "numeric":
            if pa.types.is_string(column.type):
                is_number = pc.match_substring_regex(column, _NUMBER)
                bad_text = pc.and_(pc.invert(missing), pc.invert(pc.fill_null(is_number, False)))
                label = pc.binary_join_element_wise(f"{spec.name}: not a number: '", column, "'", "")
                reasons.append(_when(bad_text, label))
                trimmed = pc.utf8_trim_whitespace(column)
                column = pc.if_else(pc.fill_null(is_number, False), trimmed, None).cast(pa.float64())
                converted[spec.name] = column
            # Missing = NULL as it arrived, or NaN (a text non-number is already rejected above).
            missing = pc.or_(missing, pc.fill_null(pc.is_nan(column), False))
            if not spec.nullable:
                reasons.append(_when(missing, f"{spec.name} is NULL"))
            reasons.append(_when(pc.is_inf(column), f"{spec.name} is not finite"))
        else:
            if not spec.nullable:
                reasons.append(_when(missing, f"{spec.name} is NULL"))
            if unseen_categories == "reject" and spec.categories:
                unseen = pc.and_(pc.invert(missing), pc.invert(pc.is_in(column, pa.array(spec.categories))))
                label = pc.binary_join_element_wise(f"{spec.name}: unseen category '", column, "'", "")
                reasons.append(_when(unseen, label))
    reason = _join_reasons(reasons)
    bad = pc.is_valid(reason)
    for name, column in converted.items():
        table = table.set_column(table.schema.get_field_index(name), name, column)
    clean = table.filter(pc.invert(bad))
    if not pc.any(bad).as_py():
        return ValidatedBatch(clean, REJECT_SCHEMA.empty_table())
    rejected = original.filter(bad)
    rejects = pa.table(
        {
            "entity_key": rejected.column(key).cast(pa.string()),
            "reason": reason.filter(bad),
            "row_data": pa.array(_json_rows(rejected), pa.string()),
        },
        schema=REJECT_SCHEMA,
    )
    return ValidatedBatch(clean, rejects)
