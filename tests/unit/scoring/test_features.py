from datetime import datetime

import numpy as np
import pyarrow as pa
import pytest

from batchscore.models.manifest import FeatureSpec
from batchscore.scoring.features import SchemaMismatch, conform, staged_schema, to_model_frame

FEATURES = (FeatureSpec("x", "numeric"), FeatureSpec("c", "categorical"))


def test_staged_schema_canonicalises_types() -> None:
    source = pa.schema([("id", pa.int32()), ("x", pa.int16()), ("c", pa.int64()), ("extra", pa.string())])
    schema = staged_schema(source, "id", FEATURES)
    assert schema == pa.schema([("id", pa.int32()), ("x", pa.float64()), ("c", pa.string())])


def test_text_numbers_stay_text_for_row_level_validation() -> None:
    schema = staged_schema(pa.schema([("id", pa.string()), ("x", pa.string()), ("c", pa.string())]), "id", FEATURES)
    assert schema.field("x").type == pa.string()


def test_missing_columns_are_named() -> None:
    with pytest.raises(SchemaMismatch, match="does not return c; it returns id, x"):
        staged_schema(pa.schema([("id", pa.int64()), ("x", pa.float64())]), "id", FEATURES)


def test_unusable_type_fails_before_any_row() -> None:
    source = pa.schema([("id", pa.int64()), ("x", pa.timestamp("us")), ("c", pa.string())])
    with pytest.raises(SchemaMismatch, match="feature 'x' has source type timestamp"):
        staged_schema(source, "id", FEATURES)
    with pytest.raises(SchemaMismatch, match="entity key 'id' has type double"):
        staged_schema(pa.schema([("id", pa.float64()), ("x", pa.float64()), ("c", pa.string())]), "id", FEATURES)


def test_conform_casts_and_drops_extra_columns() -> None:
    schema = pa.schema([("id", pa.int64()), ("x", pa.float64()), ("c", pa.string())])
    batch = pa.table(
        {"id": [1, 2], "x": [1, None], "c": pa.array(["a", "b"]).dictionary_encode(), "t": [datetime(2026, 1, 1)] * 2}
    )
    out = conform(batch, schema)
    assert out.schema == schema
    assert out.to_pydict() == {"id": [1, 2], "x": [1.0, None], "c": ["a", "b"]}


def test_model_frame_uses_nan_for_missing_in_both_kinds() -> None:
    frame = to_model_frame(pa.table({"x": [1.0, None], "c": ["a", None]}), FEATURES)
    assert frame["x"].dtype == np.float64
    assert np.isnan(frame["x"][1])
    assert frame["c"].dtype == object
    assert frame["c"][0] == "a"
    assert frame["c"][1] is np.nan  # noqa: PLW0177 (identity with the sentinel is the point)


def test_numbers_turned_into_text_since_training_fail_naming_both_types() -> None:
    trained = (FeatureSpec("x", "numeric", source_type="double"), FeatureSpec("c", "categorical", source_type="string"))
    source = pa.schema([("id", pa.int64()), ("x", pa.string()), ("c", pa.string())])
    with pytest.raises(SchemaMismatch, match=r"feature 'x' is string in the source but was double when the model"):
        staged_schema(source, "id", trained)
    as_trained = pa.schema([("id", pa.int64()), ("x", pa.int32()), ("c", pa.int64())])  # still numbers: fine
    assert staged_schema(as_trained, "id", trained).field("x").type == pa.float64()
