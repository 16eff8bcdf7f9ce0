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

from batchscore.models.manifest import FeatureSpec

_NUMBER = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"
# A check's reason ends with the offending value in quotes ("region: unseen category 'mars'"), and a
# row's reasons are joined with '; '. This PostgreSQL pattern finds each value, from its opening
# quote to the quote that ends its reason (a value with quotes of its own included), so reasons
# can be shown or grouped without the values: they are the source's data, maybe personal.
VALUE_IN_REASON = r"'.*?'(?=; |$)"
REJECT_SCHEMA = pa.schema([("entity_key", pa.string()), ("reason", pa.string()), ("row_data", pa.string())])


@dataclass(frozen=True)
class ValidatedBatch:
    """``clean`` holds the scorable rows (numbers as float64); ``rejects`` the rest with reasons."""

    clean: pa.Table
    rejects: pa.Table


@dataclass(frozen=True)
class _Check:
    """A per-row failure mask and its reason; ``column`` appends the offending value to the reason."""

    mask: pa.ChunkedArray
    reason: str
    column: str | None = None


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
    checks: list[_Check] = [_Check(pc.is_null(table.column(key)), f"{key} (entity key) is NULL")]
    converted = table
    for spec in features:
        column = table.column(spec.name)
        missing = pc.is_null(column)
        if spec.kind == "numeric":
            if pa.types.is_string(column.type):
                is_number = pc.fill_null(pc.match_substring_regex(column, _NUMBER), False)
                checks.append(
                    _Check(
                        pc.and_(pc.invert(missing), pc.invert(is_number)), f"{spec.name}: not a number: '", spec.name
                    )
                )
                column = pc.if_else(is_number, pc.utf8_trim_whitespace(column), None).cast(pa.float64())
                converted = converted.set_column(converted.schema.get_field_index(spec.name), spec.name, column)
            if not spec.nullable:
                # Missing = NULL as it arrived, or NaN (a text non-number is already rejected above).
                checks.append(_Check(pc.or_(missing, pc.fill_null(pc.is_nan(column), False)), f"{spec.name} is NULL"))
            checks.append(_Check(pc.is_inf(column), f"{spec.name} is not finite"))
        else:
            if not spec.nullable:
                checks.append(_Check(missing, f"{spec.name} is NULL"))
            if unseen_categories == "reject" and spec.categories:
                unseen = pc.and_(pc.invert(missing), pc.invert(pc.is_in(column, pa.array(spec.categories))))
                checks.append(_Check(unseen, f"{spec.name}: unseen category '", spec.name))
    bad = checks[0].mask
    for check in checks[1:]:
        bad = pc.or_kleene(bad, check.mask)
    bad = pc.fill_null(bad, False)
    if not pc.any(bad).as_py():  # the common case: no copy, no strings
        return ValidatedBatch(converted, REJECT_SCHEMA.empty_table())
    rejected = table.filter(bad)
    pieces = []
    for check in checks:
        mask = pc.fill_null(check.mask.filter(bad), False)
        text = (
            pc.binary_join_element_wise(check.reason, rejected.column(check.column), "'", "")
            if check.column
            else check.reason
        )
        pieces.append(pc.if_else(mask, text, pa.scalar(None, pa.string())))
    rejects = pa.table(
        {
            "entity_key": rejected.column(key).cast(pa.string()),
            "reason": _join_reasons(pieces),
            "row_data": pa.array(_json_rows(rejected), pa.string()),
        },
        schema=REJECT_SCHEMA,
    )
    return ValidatedBatch(converted.filter(pc.invert(bad)), rejects)
