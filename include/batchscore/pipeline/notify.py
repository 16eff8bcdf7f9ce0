"""The ``notify:`` section of a pipeline file: who hears about which of a run's events, and how.

Each rule names events, a channel (``smtp``, ``slack_webhook`` or ``webhook``) and the Airflow
connection that reaches it. Sending is the Airflow adapter's (:mod:`batchscore.airflow.notify`),
through the providers' notifier classes; this module only validates what the file asks for.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# What a run can tell someone about. A failed run is exactly one of the first four (the most
# specific); ``deadline_missed`` comes from the DAG's deadline alert, whatever the run's state.
Event = Literal["failure", "drift_hold", "guard", "upstream_timeout", "deadline_missed"]
EVENTS: tuple[Event, ...] = ("failure", "drift_hold", "guard", "upstream_timeout", "deadline_missed")
Channel = Literal["smtp", "slack_webhook", "webhook"]

# One address, no display name: what SMTP's RCPT TO takes. Checked so a typo fails at parse time.
EMAIL = re.compile(r"^[^@\s<>,;\"']+@[^@\s<>,;\"']+\.[^@\s<>,;\"']+$")


class NotifyRule(BaseModel):
    """One rule: send ``on`` these events ``via`` a channel, through connection ``conn_id``.

    ``to`` lists the mail recipients (``smtp`` only; required there); ``from_email`` overrides the
    SMTP connection's sender. YAML 1.1 reads a bare ``on:`` key as ``true``: it is taken as ``on``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    on: tuple[Event, ...] = Field(min_length=1)
    via: Channel
    conn_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,250}$")
    to: tuple[str, ...] = ()
    from_email: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _yaml_on_key(cls, data: object) -> object:
        if isinstance(data, dict) and True in data and "on" not in data:
            data = {("on" if key is True else key): value for key, value in data.items()}
        if isinstance(data, dict):
            for key in ("on", "to"):
                if isinstance(data.get(key), str):
                    data = {**data, key: [data[key]]}
        return data

    @field_validator("on")
    @classmethod
    def _distinct(cls, events: tuple[Event, ...]) -> tuple[Event, ...]:
        if len(set(events)) != len(events):
            raise ValueError("an event is listed more than once")
        return events

    @field_validator("to", "from_email")
    @classmethod
    def _addresses(cls, value: tuple[str, ...] | str | None) -> tuple[str, ...] | str | None:
        for address in (value,) if isinstance(value, str) else value or ():
            if not EMAIL.match(address):
                raise ValueError(f"{address[:80]!r} is not an e-mail address (name@example.com)")
        return value

    @model_validator(mode="after")
    def _recipients_for_mail_only(self) -> NotifyRule:
        if self.via == "smtp" and not self.to:
            raise ValueError("via smtp needs to: [addresses]")
        if self.via != "smtp" and (self.to or self.from_email):
            raise ValueError(f"to and from_email are for via smtp; {self.via} posts to its connection's address")
        return self
