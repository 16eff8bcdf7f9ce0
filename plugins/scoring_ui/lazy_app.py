"""An ASGI app imported on its first request, so loading the plugin costs a task process nothing.

Airflow loads every plugin in every task process (for macros and listeners), and the Scoring
view's FastAPI app imports the api-server's security and its whole application: about
1.2 CPU-seconds per task, for an app only the api-server ever serves. The api-server mounts
this stand-in at the plugin's prefix, and the first request under it imports the real app.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class LazyApp:
    """Stands in for ``<module>.app``, an ASGI application, until its first call imports it."""

    def __init__(self, module: str, attribute: str = "app") -> None:
        self.module = module
        self.attribute = attribute
        self._app: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None
        self._lock = threading.Lock()

    def load(self) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
        """The real app (imported once, whichever request or thread asks first)."""
        if self._app is None:
            with self._lock:
                if self._app is None:
                    self._app = getattr(importlib.import_module(self.module), self.attribute)
        return self._app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.load()(scope, receive, send)
