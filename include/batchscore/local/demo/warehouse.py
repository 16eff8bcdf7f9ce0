"""Generate the demo warehouse: daily customer activity with known churn and spend rules.

Deterministic from a seed: day ``d`` always gets the same rows whatever the chunking,
so tests can regenerate any window independently. The churn outcome follows
:func:`true_churn_logit` plus noise and the next 30 days' spend follows
:func:`true_spend_30d` times noise, so a model's quality can be checked against the
rule that made the data. A few rows are dirty on purpose (a NULL ``plan``, a region
the model was not trained on) so the rejects path is exercised by the demo itself.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from batchscore import settings

PLANS = np.array(["basic", "standard", "premium"])
REGIONS = np.array(["north", "south", "east", "west", "central"])
CHANNELS = np.array(["web", "app", "store"])
NEW_REGION = "islands"  # appears only in the last days: unseen by a model trained earlier
NUMERIC_FEATURES = (
    "tenure_days",
    "monthly_spend",
    "txn_count_7d",
    "txn_amount_7d",
    "support_tickets_30d",
    "days_since_last_login",
    "avg_session_minutes",
    "discount_rate",
    "late_payments_90d",
)
CATEGORICAL_FEATURES = ("plan", "region", "channel")
SPEND_NOISE = 0.3  # sigma of the log-normal noise on spend_next_30d
FEATURES = CATEGORICAL_FEATURES + NUMERIC_FEATURES


def true_churn_logit(cols: dict[str, np.ndarray]) -> np.ndarray:
    """The ground-truth rule (before noise) that decides churn in the demo data."""
    login = np.where(np.isnan(cols["days_since_last_login"]), 45.0, cols["days_since_last_login"])
    plan = cols["plan"]
    return (
        -2.2
        + 0.55 * cols["support_tickets_30d"]
        - 0.0025 * cols["tenure_days"]
        + 0.035 * login
        + 0.45 * cols["late_payments_90d"]
        - 0.04 * cols["txn_count_7d"]
        + 1.5 * cols["discount_rate"]
        + np.where(plan == "premium", -0.6, 0.0)
        + np.where(plan == "basic", 0.35, 0.0)
    )


def true_spend_30d(cols: dict[str, np.ndarray]) -> np.ndarray:
    """The ground-truth expected spend over the next 30 days (before noise), in the currency of ``monthly_spend``.

    The subscription plus purchases at the last week's pace (more on premium, with a discount,
    less the longer since the last login), for a customer who stays: times P(no churn).
    """
    login = np.where(np.isnan(cols["days_since_last_login"]), 45.0, cols["days_since_last_login"])
    plan = cols["plan"]
    pace = np.where(plan == "premium", 1.25, np.where(plan == "basic", 0.9, 1.0))
    purchases = (30 / 7) * cols["txn_amount_7d"] * pace * (1.0 + cols["discount_rate"]) * np.exp(-login / 40.0)
    stay = 1.0 / (1.0 + np.exp(true_churn_logit(cols)))
    return stay * (cols["monthly_spend"] + purchases)


def generate_day(day: date, rows: int, seed: int = 7, dirty_fraction: float = 0.0005) -> dict[str, np.ndarray]:
    """Columns for one day of activity (one row per customer ``1..rows``)."""
    rng = np.random.default_rng([seed, day.toordinal()])
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    seconds = rng.integers(0, 86_400, rows)
    cols: dict[str, Any] = {
        "customer_id": np.arange(1, rows + 1, dtype=np.int64),
        "event_time": np.datetime64(midnight.replace(tzinfo=None), "us") + seconds.astype("timedelta64[s]"),
        "plan": PLANS[rng.choice(3, rows, p=[0.5, 0.35, 0.15])].astype(object),
        "region": REGIONS[rng.integers(0, 5, rows)].astype(object),
        "channel": CHANNELS[rng.integers(0, 3, rows)].astype(object),
        "tenure_days": rng.gamma(2.0, 250.0, rows).astype(np.int32),
        "monthly_spend": np.round(rng.lognormal(3.6, 0.5, rows), 2),
        "txn_count_7d": rng.poisson(6, rows).astype(np.int32),
        "support_tickets_30d": rng.poisson(0.6, rows).astype(np.int32),
        "days_since_last_login": np.round(rng.exponential(9.0, rows), 1),
        "avg_session_minutes": np.round(rng.gamma(3.0, 4.0, rows), 1),
        "discount_rate": np.round(rng.beta(1.2, 8.0, rows), 3),
        "late_payments_90d": rng.poisson(0.3, rows).astype(np.int32),
    }
    cols["txn_amount_7d"] = np.round(cols["txn_count_7d"] * rng.lognormal(2.5, 0.6, rows), 2)
    cols["days_since_last_login"][rng.random(rows) < 0.03] = np.nan
    cols["avg_session_minutes"][rng.random(rows) < 0.02] = np.nan
    cols["channel"][rng.random(rows) < 0.05] = None
    logit = true_churn_logit(cols) + rng.normal(0.0, 0.5, rows)
    cols["churned"] = rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))
    expected_spend = true_spend_30d(cols)
    # Dirty rows on purpose: a NULL where the model allows none, and a brand-new region.
    cols["plan"][rng.random(rows) < dirty_fraction] = None
    cols["region"][rng.random(rows) < dirty_fraction] = NEW_REGION
    # Drawn last, so every earlier column is what it was before spend existed. Mean-one
    # log-normal noise: true_spend_30d is the expected value given the features.
    cols["spend_next_30d"] = np.round(expected_spend * rng.lognormal(-(SPEND_NOISE**2) / 2, SPEND_NOISE, rows), 2)
    return cols


def day_table(day: date, rows: int, seed: int = 7) -> pa.Table:
    """One day as an Arrow table in the warehouse's column order and types."""
    cols = generate_day(day, rows, seed)
    return pa.table(
        {
            "customer_id": pa.array(cols["customer_id"], pa.int64()),
            "event_time": pa.array(cols["event_time"], pa.timestamp("us", tz="UTC")),
            "plan": pa.array(cols["plan"], pa.string()),
            "region": pa.array(cols["region"], pa.string()),
            "channel": pa.array(cols["channel"], pa.string()),
            "tenure_days": pa.array(cols["tenure_days"], pa.int32()),
            "monthly_spend": pa.array(cols["monthly_spend"], pa.float64()),
            "txn_count_7d": pa.array(cols["txn_count_7d"], pa.int32()),
            "txn_amount_7d": pa.array(cols["txn_amount_7d"], pa.float64()),
            "support_tickets_30d": pa.array(cols["support_tickets_30d"], pa.int32()),
            "days_since_last_login": pa.array(cols["days_since_last_login"], pa.float64(), from_pandas=True),
            "avg_session_minutes": pa.array(cols["avg_session_minutes"], pa.float64(), from_pandas=True),
            "discount_rate": pa.array(cols["discount_rate"], pa.float64()),
            "late_payments_90d": pa.array(cols["late_payments_90d"], pa.int32()),
            "churned": pa.array(cols["churned"], pa.bool_()),
            "spend_next_30d": pa.array(cols["spend_next_30d"], pa.float64()),
        }
    )


def seed_warehouse(url: str, *, end: date, days: int, rows_per_day: int, seed: int = 7) -> int:
    """(Re)create ``warehouse.customer_activity`` with ``days`` days ending before ``end``.

    Loads through ADBC (binary COPY) a day at a time, so memory stays at one day.
    Returns the number of rows written.
    """
    import adbc_driver_postgresql.dbapi as adbc

    from batchscore.db import libpq_url

    ddl = (settings.sql_dir() / "demo_warehouse.sql").read_text()
    total = 0
    with adbc.connect(libpq_url(url)) as conn:
        with conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS warehouse.customer_activity")
            for statement in ddl.split(";"):
                if statement.strip():
                    cur.execute(statement)
            for offset in range(days, 0, -1):
                table = day_table(end - timedelta(days=offset), rows_per_day, seed)
                cur.adbc_ingest("customer_activity", table, mode="append", db_schema_name="warehouse")
                total += table.num_rows
            cur.execute("CREATE INDEX customer_activity_event_time_idx ON warehouse.customer_activity (event_time)")
            cur.execute("ANALYZE warehouse.customer_activity")
        conn.commit()
    return total
