"""What every block of a pipeline file shares: its error, strictness and name rules.

Blocks forbid unknown keys (a typo fails at parse time instead of being ignored) and are frozen.
Identifiers are lower-case SQL names checked here, never quoted from user text: every statement
that uses one composes it with ``psycopg.sql.Identifier`` as well.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

from batchscore.errors import PermanentError

IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
MODEL_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
PLACEHOLDERS = (":window_start", ":window_end")


class ConfigError(PermanentError, ValueError):
    """A pipeline config is invalid; the message names the file and the field."""

    remedy = "fix the named field of the pipeline file"


class Strict(BaseModel):
    """A config block: unknown keys refused, values frozen once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def check_identifier(value: str, what: str) -> str:
    if not IDENTIFIER.match(value):
        raise ValueError(f"{what} {value!r} must be a lower-case SQL identifier ([a-z_][a-z0-9_]*)")
    return value


def bounded_by_window(query: str) -> str:
    """A single statement using both window placeholders, without its trailing semicolon."""
    missing = [p for p in PLACEHOLDERS if not re.search(re.escape(p) + r"\b", query)]
    if missing:
        raise ValueError(
            f"must use both :window_start and :window_end (missing {', '.join(missing)}); "
            "bound the event column as  col >= :window_start AND col < :window_end"
        )
    if ";" in query.strip().rstrip(";"):
        raise ValueError("must be a single SELECT statement")
    return query.strip().rstrip(";")


def valid_cron(schedule: str) -> str:
    from croniter import croniter

    if not croniter.is_valid(schedule):
        raise ValueError(f"{schedule!r} is not a valid cron expression")
    return schedule
