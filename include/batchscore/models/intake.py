"""Bringing a data scientist's model file into the registry: read it safely, derive its features.

A skops file is read under the registry's allowlist. A joblib or pickle file runs code when it
is read, so it is read only when a person vouches for it by giving its sha256
(``trust_sha256``, a deliberate human step), and only after the file's bytes match it; it is
then stored as skops like any other version, and the pickle's sha256 is kept in the manifest.
The features come from the estimator itself: ``feature_names_in_`` gives the names (so the
model must have been fitted on a DataFrame), encoders inside a ColumnTransformer mark their
columns categorical with the categories they were fitted on, everything else is numeric.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchscore.models.manifest import FeatureSpec, RegistryError, sha256_hex
from batchscore.models.registry import _deserialise
from batchscore.pipeline.config_rules import IDENTIFIER

if TYPE_CHECKING:
    import pyarrow as pa

PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")


def read_model_file(path: Path, *, trust_sha256: str | None = None) -> tuple[Any, dict[str, str]]:
    """The estimator in ``path`` and what to record about the file it came from."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RegistryError(f"{path}: cannot read: {exc.strerror}") from None
    source = {"file": path.name, "file_sha256": sha256_hex(data)}
    if path.suffix == ".skops":
        return _deserialise(str(path), data), source | {"format": "skops"}
    if path.suffix in PICKLE_SUFFIXES:
        if not trust_sha256:
            raise RegistryError(
                f"{path}: a {path.suffix} file runs code when it is loaded; save the model with skops "
                "(skops.io.dump), or pass --trust-pickle <its sha256> if you trust where this file comes from"
            )
        if source["file_sha256"] != trust_sha256.lower():
            raise RegistryError(
                f"{path}: sha256 {source['file_sha256']} is not the one given to --trust-pickle ({trust_sha256}); "
                "the file is not the one you vouched for, so it is not loaded"
            )
        import io

        import joblib

        # The verified bytes themselves are loaded (not the path again: the file could change meanwhile).
        return joblib.load(io.BytesIO(data)), source | {"format": path.suffix.lstrip(".")}
    raise RegistryError(
        f"{path}: unknown model format {path.suffix!r}; use .skops (or .joblib/.pkl with --trust-pickle)"
    )


def _missing(value: Any) -> bool:
    """None or NaN: an encoder's category for missing values, not a category a row may have."""
    return value is None or (isinstance(value, float) and value != value)  # noqa: PLR0124 (NaN test)


def _encoded_columns(estimator: Any) -> dict[str, tuple[str, ...]]:
    """Columns a ColumnTransformer (anywhere in a Pipeline) sends to a categorical encoder, with their categories."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    found: dict[str, tuple[str, ...]] = {}
    stack = [estimator]
    while stack:
        current = stack.pop()
        if isinstance(current, Pipeline):
            stack.extend(step for _, step in current.steps)
        elif isinstance(current, ColumnTransformer):
            for _, transformer, columns in current.transformers_:
                last = transformer.steps[-1][1] if isinstance(transformer, Pipeline) else transformer
                if isinstance(last, (OneHotEncoder, OrdinalEncoder)) and isinstance(columns, (list, tuple)):
                    for column, categories in zip(columns, last.categories_, strict=False):
                        found[str(column)] = tuple(str(c) for c in categories if not _missing(c))
    return found


def features_of(estimator: Any) -> tuple[FeatureSpec, ...]:
    """The model's inputs, from the fitted estimator (names from ``feature_names_in_``)."""
    names = getattr(estimator, "feature_names_in_", None)
    if names is None:
        raise RegistryError(
            f"{type(estimator).__name__} has no feature names: fit it on a pandas DataFrame whose columns "
            "are the pipeline's features"
        )
    bad = [str(n) for n in names if not IDENTIFIER.match(str(n))]
    if bad:
        raise RegistryError(f"feature names must be lower-case SQL identifiers: {', '.join(bad)}")
    encoded = _encoded_columns(estimator)
    return tuple(
        FeatureSpec(str(name), "categorical", categories=encoded[str(name)])
        if str(name) in encoded
        else FeatureSpec(str(name), "numeric")
        for name in names
    )


def read_reference_file(path: Path) -> pa.Table:
    """A reference sample from a Parquet or CSV file (the model's training data, or rows like it)."""
    import pyarrow.csv
    import pyarrow.parquet

    try:
        if path.suffix == ".parquet":
            return pyarrow.parquet.read_table(path)
        if path.suffix == ".csv":
            return pyarrow.csv.read_csv(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise RegistryError(f"{path}: cannot read the reference: {exc}") from None
    raise RegistryError(f"{path}: a reference is a .parquet or .csv file, not {path.suffix or 'a file without suffix'}")


def reference_frame(table: pa.Table, features: tuple[FeatureSpec, ...], what: str) -> pa.Table:
    """The reference's feature columns as the model sees them: float64 numbers, text categories."""
    import pyarrow as pa
    import pyarrow.compute as pc

    missing = [f.name for f in features if f.name not in table.column_names]
    if missing:
        raise RegistryError(
            f"{what}: the reference has no column {', '.join(missing)}; it has {', '.join(table.column_names)}"
        )
    if table.num_rows == 0:
        raise RegistryError(f"{what}: the reference has no rows")
    columns = []
    for spec in features:
        column = table.column(spec.name)
        target = pa.float64() if spec.kind == "numeric" else pa.string()
        try:
            columns.append(pc.cast(column, target))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise RegistryError(f"{what}: reference column {spec.name} is not {spec.kind}: {exc}") from None
    return pa.Table.from_arrays(columns, names=[f.name for f in features])


def with_reference_categories(features: tuple[FeatureSpec, ...], table: pa.Table) -> tuple[FeatureSpec, ...]:
    """Categorical features whose encoder did not list its categories take the reference's (the unseen check)."""
    from dataclasses import replace

    import pyarrow.compute as pc

    return tuple(
        replace(
            spec, categories=tuple(sorted(v for v in pc.unique(table.column(spec.name)).to_pylist() if v is not None))
        )
        if spec.kind == "categorical" and not spec.categories
        else spec
        for spec in features
    )
