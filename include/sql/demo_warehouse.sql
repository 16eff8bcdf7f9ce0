-- The demo warehouse: one row per customer per day of activity features,
-- with the outcomes the ground-truth rules drew for that row (churn, the next 30 days' spend).
-- spend_next_30d is last and nullable, so positional INSERTs of the older columns still work.
CREATE SCHEMA IF NOT EXISTS warehouse;

CREATE TABLE IF NOT EXISTS warehouse.customer_activity (
    customer_id          bigint           NOT NULL,
    event_time           timestamptz      NOT NULL,
    plan                 text,
    region               text,
    channel              text,
    tenure_days          integer,
    monthly_spend        double precision,
    txn_count_7d         integer,
    txn_amount_7d        double precision,
    support_tickets_30d  integer,
    days_since_last_login double precision,
    avg_session_minutes  double precision,
    discount_rate        double precision,
    late_payments_90d    integer,
    churned              boolean          NOT NULL,
    spend_next_30d       double precision
);
