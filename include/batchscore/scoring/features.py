"""The model's input schema applied to Arrow data: canonical column types per feature kind.

Extract, predict and training all go through these functions so that a value reaches the
model in the same representation whichever path read it (binary COPY, a SQLAlchemy
cursor, or a training query).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from batchscore.errors import PermanentError
from batchscore.models.manifest import FeatureSpec

if TYPE_CHECKING:
    import pandas as pd


class SchemaMismatch(PermanentError, ValueError):
    """The source's columns cannot feed the model: missing or of an unusable type."""

    remedy = "make the source query return every feature the model needs, with a usable type"


def _numeric_like(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_boolean(t))


def _string_like(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t))


def canonical_type(spec: FeatureSpec, source: pa.DataType) -> pa.DataType:
    """The staged type of a feature: float64 for numbers, string for categories.

    A numeric feature that was text in the training data too stays text here; validation
    parses it row by row, so a bad value rejects its row with a reason. One that was numbers
    when the model was trained and is text now is a changed source contract: it fails here,
    before any row is read, naming both types.
    """
    if pa.types.is_null(source):
        return pa.float64() if spec.kind == "numeric" else pa.string()
    if spec.kind == "numeric":
        if _numeric_like(source):
            return pa.float64()
        if _string_like(source):
            if spec.source_type and not spec.source_type.startswith(("string", "large_string", "dictionary")):
                raise SchemaMismatch(
                    f"feature {spec.name!r} is {source} in the source but was {spec.source_type} when the model "
                    f"was trained; cast it back in the source query (e.g. {spec.name}::float8)"
                )
            return pa.string()
    elif _string_like(source) or pa.types.is_integer(source) or pa.types.is_boolean(source):
        return pa.string()
    raise SchemaMismatch(f"feature {spec.name!r} has source type {source}; the model expects {spec.kind} values")


def staged_schema(source: pa.Schema, key: str, features: tuple[FeatureSpec, ...]) -> pa.Schema:
    """The schema of staged parts: the key as the source has it, then the features."""
    names = set(source.names)
    missing = [c for c in (key, *(f.name for f in features)) if c not in names]
    if missing:
        raise SchemaMismatch(
            f"the source query does not return {', '.join(missing)}; it returns {', '.join(source.names)}"
        )
    key_type = source.field(key).type
    if pa.types.is_dictionary(key_type) or pa.types.is_large_string(key_type):
        key_type = pa.string()
    elif pa.types.is_null(key_type):
        key_type = pa.int64()
    if not (pa.types.is_integer(key_type) or pa.types.is_string(key_type)):
        raise SchemaMismatch(f"entity key {key!r} has type {key_type}; use an integer or text key")
    fields = [pa.field(key, key_type)]
    fields += [pa.field(f.name, canonical_type(f, source.field(f.name).type)) for f in features]
    return pa.schema(fields)


def conform(batch: pa.RecordBatch | pa.Table, schema: pa.Schema) -> pa.Table:
    """Select and cast ``batch``'s columns to ``schema`` (extra source columns are dropped)."""
    table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
    columns = []
    for field in schema:
        column = table.column(field.name)
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        columns.append(column.cast(field.type) if column.type != field.type else column)
    return pa.Table.from_arrays(columns, schema=schema)


def to_model_frame(table: pa.Table, features: tuple[FeatureSpec, ...]) -> pd.DataFrame:
    """The pandas frame a model sees: float64 numbers (NaN for missing), object categories (NaN for missing).

    Training uses this too, so the representation of a missing category is the same at
    fit and at predict time. An all-numeric frame is one column-major float64 block (pandas'
    own layout, each column written contiguously: row-major writes cost about 0.4 CPU-s per
    million rows of 20 features), so the model's ``np.asarray(frame)`` is a view, in the
    layout the compiled trees bin fastest.
    """
    import numpy as np
    import pandas as pd

    names = [f.name for f in features]
    if all(spec.kind == "numeric" for spec in features):
        matrix = np.empty((table.num_rows, len(features)), dtype=np.float64, order="F")
        for j, spec in enumerate(features):
            matrix[:, j] = table.column(spec.name).cast(pa.float64()).to_numpy()
        return pd.DataFrame(matrix, columns=names, copy=False)
    data: dict[str, Any] = {}
    for spec in features:
        column = table.column(spec.name)
        if spec.kind == "numeric":
            data[spec.name] = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
        else:
            values = column.cast(pa.string()).to_numpy(zero_copy_only=False).astype(object)
            values[pd.isna(values)] = np.nan
            data[spec.name] = pd.Series(values, dtype=object)  # pandas 3 would infer its str dtype
    return pd.DataFrame(data, columns=names)


@dataclass(frozen=True)
class ArrowRows:
    """Validated rows for a scorer that reads Arrow itself (a Pipeline's compiled steps).

    The pandas frame of :func:`to_model_frame` is built only when asked for (scikit-learn's
    own calls: the self-check, a batch the compiled steps hand back).
    """

    table: pa.Table
    features: tuple[FeatureSpec, ...]

    def __len__(self) -> int:
        return int(self.table.num_rows)

    def __getitem__(self, rows: slice) -> ArrowRows:
        start, stop, step = rows.indices(self.table.num_rows)
        if step != 1:
            raise ValueError("ArrowRows slices rows with step 1 only")
        return ArrowRows(self.table.slice(start, max(0, stop - start)), self.features)

    def frame(self) -> pd.DataFrame:
        return to_model_frame(self.table, self.features)
