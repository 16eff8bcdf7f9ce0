import json

import pyarrow as pa

from batchscore.models.manifest import FeatureSpec
from batchscore.scoring.validation import validate

FEATURES = (
    FeatureSpec("amount", "numeric", nullable=False),
    FeatureSpec("age", "numeric", nullable=True),
    FeatureSpec("plan", "categorical", nullable=False, categories=("basic", "premium")),
    FeatureSpec("channel", "categorical", nullable=True, categories=("web", "app")),
)


def table(**overrides: list) -> pa.Table:
    base = {
        "id": [1, 2, 3],
        "amount": [10.0, 20.0, 30.0],
        "age": [30.0, None, 50.0],
        "plan": ["basic", "premium", "basic"],
        "channel": ["web", None, "app"],
    }
    return pa.table(base | overrides)


def reasons(result) -> dict:
    data = result.rejects.to_pydict()
    return dict(zip(data["entity_key"], data["reason"], strict=True))


def test_clean_rows_pass_untouched() -> None:
    result = validate(table(), "id", FEATURES)
    assert result.rejects.num_rows == 0
    assert result.clean.to_pydict() == table().to_pydict()


def test_null_in_non_nullable_features_is_rejected_with_reason() -> None:
    result = validate(table(amount=[None, 20.0, 30.0], plan=["basic", None, "basic"]), "id", FEATURES)
    assert reasons(result) == {"1": "amount is NULL", "2": "plan is NULL"}
    assert result.clean.column("id").to_pylist() == [3]


def test_nan_counts_as_missing_and_infinity_is_rejected() -> None:
    result = validate(
        table(amount=[float("nan"), float("inf"), 1.0], age=[float("nan"), 1.0, float("-inf")]), "id", FEATURES
    )
    assert reasons(result) == {"1": "amount is NULL", "2": "amount is not finite", "3": "age is not finite"}


def test_unseen_category_rejected_or_scored_by_policy() -> None:
    data = table(plan=["basic", "enterprise", "basic"], channel=["web", "fax", None])
    assert reasons(validate(data, "id", FEATURES)) == {
        "2": "plan: unseen category 'enterprise'; channel: unseen category 'fax'"
    }
    assert validate(data, "id", FEATURES, unseen_categories="score").rejects.num_rows == 0


def test_wrong_typed_text_values_are_rejected_and_good_text_numbers_parsed() -> None:
    data = table(amount=["12.5", "twelve", " 1e3 "])
    result = validate(data, "id", FEATURES)
    assert reasons(result) == {"2": "amount: not a number: 'twelve'"}
    assert result.clean.column("amount").type == pa.float64()
    assert result.clean.column("amount").to_pylist() == [12.5, 1000.0]


def test_null_entity_key_is_rejected() -> None:
    result = validate(table(id=[1, None, 3]), "id", FEATURES)
    assert reasons(result) == {None: "id (entity key) is NULL"}


def test_reject_keeps_the_row_as_it_arrived_as_valid_json() -> None:
    result = validate(table(amount=["oops", "20", "30"], age=[float("inf"), 1.0, 2.0]), "id", FEATURES)
    row = json.loads(result.rejects.column("row_data")[0].as_py())
    assert row == {"id": 1, "amount": "oops", "age": "inf", "plan": "basic", "channel": "web"}
    assert result.rejects.column("reason")[0].as_py() == "amount: not a number: 'oops'; age is not finite"


def test_several_reasons_are_joined_per_row() -> None:
    result = validate(table(amount=[None, 1.0, 2.0], plan=["gold", "basic", "basic"]), "id", FEATURES)
    assert reasons(result) == {"1": "amount is NULL; plan: unseen category 'gold'"}
