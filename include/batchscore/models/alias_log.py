"""A model's aliases as a log of changes, each one a file created exclusively: compare-and-swap on any store.

Change number n+1 can be created once: a writer reads the log, decides (the alias's old
target is known exactly), and creates n+1; if another writer created it first, the create
fails and it reads again. So two promotions at the same moment both land, in an order every
reader sees alike, each recording the target it replaced, and no history entry is lost
(a read-modify-write of one aliases file loses one of them). Nothing here needs a lock on a
store with an atomic create-if-absent (:func:`batchscore.models.storage.create_exclusive`).
"""

from __future__ import annotations

import json
import random
import time
from datetime import UTC, datetime
from typing import Any, Final

from batchscore.errors import PermanentError
from batchscore.models import registry_layout as layout
from batchscore.models import storage

ATTEMPTS = 200  # each failed attempt means another writer's change landed: 200 is far past any real contention


class Unset:
    def __repr__(self) -> str:
        return "ANY"


ANY: Final = Unset()


class AliasConflict(PermanentError, RuntimeError):
    """The alias no longer points where the caller expected (someone else moved it first)."""

    remedy = "look at the alias's history (batchscore models show), then promote again if it is still wanted"


class AliasContention(RuntimeError):
    """Other writers kept changing the aliases for every attempt: worth retrying (not permanent)."""


class AliasLog:
    """The aliases of the model in folder ``model_url``, read from and appended to its change log."""

    def __init__(self, model_url: str, *, locked: bool = False) -> None:
        """``locked``: the caller holds the registry's writer lock (:mod:`batchscore.models.registry_lock`)."""
        self.model_url = model_url.rstrip("/")
        self.locked = locked

    def _url(self, *parts: str) -> str:
        return storage.join(self.model_url, *parts)

    def _read_json(self, name: str, default: Any) -> Any:
        url = self._url(name)
        return json.loads(storage.read_bytes(url)) if storage.exists(url) else default

    def changes(self) -> list[tuple[int, dict[str, Any]]]:
        """Every change made through this log, as (number, record), in order."""
        numbered = sorted(
            (seq, name)
            for name in storage.names_in(self._url(layout.ALIAS_CHANGES))
            if (seq := layout.change_seq(name)) is not None
        )
        blobs = storage.read_many([self._url(layout.ALIAS_CHANGES, name) for _, name in numbered])
        return [(seq, json.loads(blob)) for (seq, _), blob in zip(numbered, blobs, strict=True)]

    def _state(self) -> tuple[int, dict[str, int]]:
        changes = self.changes()
        last = changes[-1][0] if changes else 0
        return last, layout.fold_aliases(self._read_json(layout.LEGACY_ALIASES, {}), (c for _, c in changes))

    def current(self) -> dict[str, int]:
        """Alias -> version number, as of the latest change."""
        return self._state()[1]

    def history(self) -> list[dict[str, Any]]:
        """Every alias change, oldest first: ``{"alias", "from", "to", "at", "by"}``."""
        older = list(self._read_json(layout.LEGACY_HISTORY, []))
        return older + [record for _, record in self.changes()]

    def change(
        self,
        alias: str,
        version: int,
        *,
        by: str = "",
        expected: int | Unset | None = ANY,
        evidence: dict[str, Any] | None = None,
    ) -> int | None:
        """Point ``alias`` at ``version`` as the next change; return the version it pointed at before.

        ``expected``: the version the caller believes the alias points at (None: unset); when it
        points elsewhere, :class:`AliasConflict` is raised and nothing changes.
        """
        for attempt in range(ATTEMPTS):
            last, aliases = self._state()
            previous = aliases.get(alias)
            if not isinstance(expected, Unset) and previous != expected:
                raise AliasConflict(
                    f"alias {alias!r} points at {_label(previous)}, not {_label(expected)}; nothing was changed"
                )
            record = {
                "alias": alias,
                "from": previous,
                "to": version,
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "by": by,
                **({"evidence": evidence} if evidence is not None else {}),  # what a person decided on
            }
            url = self._url(layout.ALIAS_CHANGES, layout.change_name(last + 1))
            try:
                storage.create_exclusive(url, json.dumps(record, indent=2).encode(), locked=self.locked)
            except FileExistsError:  # another writer's change is number last+1: read again
                time.sleep(random.uniform(0, 0.002 * min(attempt + 1, 25)))  # noqa: S311 (jitter, not secrets)
                continue
            return previous
        raise AliasContention(f"{self.model_url}: alias {alias!r} not changed after {ATTEMPTS} attempts")


def _label(version: int | Unset | None) -> str:
    return "nothing" if version is None else f"v{version}"
