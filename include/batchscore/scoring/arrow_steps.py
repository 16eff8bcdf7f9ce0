"""A Pipeline's steps before its trees, computed straight from the Arrow batch, bit for bit as scikit-learn does.

Scored through scikit-learn, a ``ColumnTransformer(imputer, one-hot) -> HistGradientBoosting*``
Pipeline costs more CPU before its trees than in them: the batch becomes a pandas frame with
one Python string per categorical value, and the encoders look each one up in a dict. Every
common step is a per-column function with fitted constants, so it can be computed in bulk:

- ``SimpleImputer`` (NaN / null missing, no indicator): the fitted ``statistics_`` where missing;
- ``StandardScaler``: ``(x - mean_) / scale_``, the same two float64 operations in the same order;
- ``OneHotEncoder`` / ``OrdinalEncoder`` (no ``drop``, no infrequent grouping): each column is
  dictionary-encoded in Arrow (in C), its few distinct values are looked up in ``categories_``
  once, and the codes are gathered per row; missing is the fitted NaN category when there is
  one, unknown values all zeros / ``unknown_value`` as the encoder's ``handle_unknown`` says;
- ``"passthrough"``, ``"drop"``, and the ``remainder``, placed at the ``ColumnTransformer``'s own
  ``output_indices_``.

The output is the float64 matrix the trees read, each value the number scikit-learn's
``transform`` gives. :func:`compile_steps` returns ``None`` (and the Pipeline keeps
scikit-learn's own ``transform``) for any step or setting it does not reproduce exactly: other
transformers, ``transformer_weights``, pandas output, weights, imputers with indicators or empty
features, categories that are not text. A batch on which scikit-learn would raise (an unknown
category with ``handle_unknown="error"``, +-inf into a step that rejects it) is handed to
scikit-learn too, so it raises its own error. The scorer's self-check compares the whole
Pipeline with its own ``predict_proba`` on the first rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa


class NotReproduced(ValueError):
    """A step or setting whose output this module does not reproduce exactly (scikit-learn transforms)."""


@dataclass
class NumericColumn:
    """One output column from a numeric source: fill NaN, then subtract and divide, in the steps' order."""

    source: str
    ops: list[tuple[str, float]] = field(default_factory=list)  # ("fill" | "sub" | "div", constant)
    finite: bool = False  # some step validates with allow-nan: +-inf makes scikit-learn raise

    def write(self, table: pa.Table, out: np.ndarray) -> bool:
        """Write the column into ``out`` (a contiguous column); False when scikit-learn would raise on it."""
        x = table.column(self.source).cast(pa.float64()).to_numpy(zero_copy_only=False)
        if self.finite and np.isinf(x).any():
            return False
        out[:] = x
        for op, constant in self.ops:
            if op == "fill":
                out[np.isnan(out)] = constant
            elif op == "sub":
                out -= constant
            else:
                out /= constant
        return True


@dataclass
class CategoricalColumn:
    """A text source, optionally imputed, then one-hot (``width`` columns) or ordinal (one column) encoded."""

    source: str
    categories: dict[str, int]  # text category -> its index in categories_
    missing_index: int | None  # the index of a fitted NaN category, if any
    fill: str | None = None  # a SimpleImputer's constant for nulls
    one_hot: bool = True
    width: int = 1
    unknown_raises: bool = False
    ordinal_values: np.ndarray | None = None  # per category index, its float64 output (ordinal only)
    ordinal_missing: float = np.nan
    ordinal_unknown: float = np.nan

    def codes(self, table: pa.Table) -> np.ndarray | None:
        """Per row the category index, -1 for unknown; None when scikit-learn would raise."""
        column = table.column(self.source).cast(pa.string())
        encoded = column.combine_chunks().dictionary_encode() if len(column) else pa.array([], pa.string())
        if not isinstance(encoded, pa.DictionaryArray):
            return np.empty(0, dtype=np.int64)
        lookup = np.array(
            [self.categories.get(v, -1) for v in encoded.dictionary.to_pylist()] + [self._null_code()],
            dtype=np.int64,
        )
        indices = encoded.indices.fill_null(len(encoded.dictionary)).to_numpy(zero_copy_only=False)
        codes = lookup[indices]
        if self.unknown_raises and (codes < 0).any():
            return None
        return codes

    def _null_code(self) -> int:
        if self.fill is not None:
            return self.categories.get(self.fill, -1)
        return -1 if self.missing_index is None else self.missing_index

    def write(self, codes: np.ndarray, out: np.ndarray, start: int) -> None:
        if self.one_hot:
            block = out[:, start : start + self.width]
            block[:] = 0.0
            rows = np.flatnonzero(codes >= 0)
            block[rows, codes[rows]] = 1.0  # the encoder's dtype holds 0 and 1 exactly: float64 is the same
            return
        assert self.ordinal_values is not None
        values = self.ordinal_values[np.maximum(codes, 0)]
        if self.missing_index is not None:
            values[codes == self.missing_index] = self.ordinal_missing
        values[codes < 0] = self.ordinal_unknown
        out[:, start] = values


Program = NumericColumn | CategoricalColumn


@dataclass(frozen=True)
class ArrowSteps:
    """The compiled steps: a program per placed output block, and the matrix width."""

    programs: tuple[tuple[int, Program], ...]
    width: int

    def matrix(self, table: pa.Table) -> np.ndarray | None:
        """The float64 matrix scikit-learn's steps would give, or None to let scikit-learn transform.

        Column-major: each program writes contiguous columns, and the kernels bin a feature's
        contiguous values (row-major writes of 20 columns cost several times as much).
        """
        out = np.empty((table.num_rows, self.width), dtype=np.float64, order="F")
        for start, program in self.programs:
            if isinstance(program, NumericColumn):
                if not program.write(table, out[:, start]):
                    return None
            else:
                codes = program.codes(table)
                if codes is None:
                    return None
                program.write(codes, out, start)
        return out


def _default_output(estimator: Any) -> None:
    config = getattr(estimator, "_sklearn_output_config", {})
    if config.get("transform", "default") != "default":
        raise NotReproduced(f"{type(estimator).__name__} is set to {config['transform']} output")


def _nan(value: Any) -> bool:
    return isinstance(value, float) and np.isnan(value)


def _text_categories(categories: np.ndarray) -> tuple[dict[str, int], int | None]:
    values = list(categories)
    missing = len(values) - 1 if values and _nan(values[-1]) else None
    known = values if missing is None else values[:-1]
    if not all(isinstance(v, str) for v in known):
        raise NotReproduced("an encoder's categories are not all text")
    return {v: i for i, v in enumerate(known)}, missing


def _imputer(step: Any, j: int, program: Program) -> None:
    from sklearn.impute import SimpleImputer

    if type(step) is not SimpleImputer or step.add_indicator or not _nan(step.missing_values):
        raise NotReproduced("an imputer with an indicator or missing values other than NaN")
    statistic = step.statistics_[j]
    if isinstance(program, NumericColumn):
        if step._fit_dtype != np.float64 or _nan(float(statistic)):
            raise NotReproduced("a numeric imputer fitted on other than float64, or on an empty column")
        program.ops.append(("fill", float(statistic)))
        program.finite = True
    elif program.fill is None and isinstance(statistic, str) and step._fit_dtype.kind == "O":
        program.fill = statistic
    else:
        raise NotReproduced("a text imputer whose fill value is not text, or imputing twice")


def _scaler(step: Any, j: int, program: Program) -> None:
    if not isinstance(program, NumericColumn):
        raise NotReproduced("a scaler on a text column")
    if step.with_mean:
        program.ops.append(("sub", float(step.mean_[j])))
    if step.with_std:
        program.ops.append(("div", float(step.scale_[j])))
    program.finite = True


def _encoder(step: Any, j: int, program: Program) -> Program:
    from sklearn.preprocessing import OneHotEncoder

    if not isinstance(program, CategoricalColumn) or program.width != 0:
        raise NotReproduced("an encoder on a numeric column, or encoding twice")
    if getattr(step, "_infrequent_enabled", False) or getattr(step, "drop", None) is not None:
        raise NotReproduced("an encoder grouping infrequent categories or dropping one")
    categories, missing = _text_categories(step.categories_[j])
    program.categories, program.missing_index = categories, missing
    program.unknown_raises = step.handle_unknown == "error"
    if type(step) is OneHotEncoder:
        program.width = len(step.categories_[j])
        return program
    if np.dtype(step.dtype).kind != "f":
        raise NotReproduced("an ordinal encoder with a non-float dtype")
    program.one_hot, program.width = False, 1
    program.ordinal_values = np.arange(len(step.categories_[j])).astype(step.dtype).astype(np.float64)
    program.ordinal_missing = float(np.asarray(step.encoded_missing_value).astype(step.dtype))
    if step.handle_unknown == "use_encoded_value":
        program.ordinal_unknown = float(np.asarray(step.unknown_value).astype(step.dtype))
    return program


def _column_program(steps: Sequence[Any], j: int, source: str, kind: str) -> Program:
    """The program of input column ``j`` of a transformer entry through its ``steps``."""
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    program: Program = NumericColumn(source) if kind == "numeric" else CategoricalColumn(source, {}, None, width=0)
    for step in steps:
        _default_output(step)
        if type(step) is SimpleImputer:
            _imputer(step, j, program)
        elif type(step) is StandardScaler:
            _scaler(step, j, program)
        elif type(step) in (OneHotEncoder, OrdinalEncoder):
            program = _encoder(step, j, program)
        elif not _identity(step):
            raise NotReproduced(f"a {type(step).__name__} step")
        if isinstance(program, CategoricalColumn) and program.width and step is not steps[-1]:
            raise NotReproduced("a step after an encoder")
    if isinstance(program, CategoricalColumn) and not program.width:
        raise NotReproduced(f"text column {source!r} reaches the trees unencoded")
    return program


def _identity(step: Any) -> bool:
    """'passthrough' (a fitted ColumnTransformer holds it as a FunctionTransformer without functions)."""
    from sklearn.preprocessing import FunctionTransformer

    if step == "passthrough" or step is None:
        return True
    return type(step) is FunctionTransformer and step.func is None and not step.validate


def _steps_of(transformer: Any) -> list[Any]:
    from sklearn.pipeline import Pipeline

    if type(transformer) is Pipeline:
        return [s for _, s in transformer.steps]
    return [transformer]


def compile_steps(prep: Any, kinds: dict[str, str]) -> ArrowSteps:
    """The Arrow programs of a Pipeline's steps before its trees; raises :class:`NotReproduced` otherwise.

    ``prep`` is the Pipeline without its last step; ``kinds`` maps each feature the batches carry
    to ``numeric`` (float64) or ``categorical`` (text), as :func:`to_model_frame` represents them.
    """
    import sklearn
    from sklearn.compose import ColumnTransformer

    if sklearn.get_config().get("transform_output", "default") != "default":
        raise NotReproduced("scikit-learn is set to a non-default transform output")
    steps = _steps_of(prep)
    if len(steps) != 1 or type(steps[0]) is not ColumnTransformer:
        raise NotReproduced("the steps before the trees are not one ColumnTransformer")
    ct = steps[0]
    _default_output(ct)
    names = getattr(ct, "feature_names_in_", None)
    if names is None or ct.transformer_weights:
        raise NotReproduced("a ColumnTransformer fitted without column names, or with weights")
    programs: list[tuple[int, Program]] = []
    for name, transformer, _ in ct.transformers_:
        if transformer == "drop":
            continue
        placed = ct.output_indices_[name]
        columns = [str(names[i]) for i in ct._transformer_to_input_indices[name]]
        if not columns:
            continue
        if any(c not in kinds for c in columns):
            raise NotReproduced(f"transformer {name!r} reads a column the batches do not carry")
        chain = _steps_of(transformer)
        start = placed.start
        for j, column in enumerate(columns):
            program = _column_program(chain, j, column, kinds[column])
            programs.append((start, program))
            start += program.width if isinstance(program, CategoricalColumn) else 1
        if start != placed.stop:
            raise NotReproduced(f"transformer {name!r} gives {placed.stop - placed.start} columns, not {start}")
    width = max((s.stop for s in ct.output_indices_.values()), default=0)
    covered = np.zeros(width, dtype=np.int64)
    for start, program in programs:
        covered[start : start + (program.width if isinstance(program, CategoricalColumn) else 1)] += 1
    if not (covered == 1).all():
        raise NotReproduced("the transformers' outputs do not tile the matrix")
    return ArrowSteps(tuple(programs), width)
