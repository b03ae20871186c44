"""What `GET /ready` reports: whether this Kiln can serve tasks now, and if not, what is missing.

`/health` says the process is alive; `/ready` says it is worth routing requests to it: the
database answers now, the engine is built, and every model named to be preloaded is loaded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from kiln.service import Services

log = logging.getLogger(__name__)


class Readiness:
    """Starts the engine (and loads the preloaded models) in the background; reports progress.

    `start` returns at once; `report` never waits for the engine, and for the database no
    longer than its timeouts (off the event loop).
    """

    def __init__(self, services: Services, preload: Sequence[str] = ()) -> None:
        self._services = services
        self._preload = tuple(preload)
        self._engine = "starting"
        self._models = {air: "loading" for air in self._preload}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._warm())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _warm(self) -> None:
        executor = self._services.executor
        try:
            await executor.start()
        except Exception as exc:  # noqa: BLE001 - reported by /ready, not raised
            log.exception("the engine did not start")
            self._engine = f"failed: {type(exc).__name__}: {exc}"
            return
        for air in self._preload:
            try:
                entry = await asyncio.to_thread(self._services.catalog.get, air)
                await executor.warm(entry.spec)
            except Exception as exc:  # noqa: BLE001
                log.exception("preloading %s failed", air)
                self._models[air] = f"failed: {getattr(exc, 'message', exc)}"
            else:
                self._models[air] = "ok"

    async def report(self) -> tuple[bool, dict[str, object]]:
        """(ready, the JSON body of `/ready`): each check is "ok" or says what is wrong."""
        engine = "ok" if self._services.executor.started else self._engine
        database = await asyncio.to_thread(self._database)
        checks: dict[str, object] = {"database": database, "engine": engine}
        if self._models:
            checks["models"] = dict(self._models)
        statuses = [database, engine, *self._models.values()]
        ready = all(status == "ok" for status in statuses)
        return ready, {"status": "ready" if ready else "unavailable", "checks": checks}

    def _database(self) -> str:
        try:
            self._services.db.ping()
        except Exception as exc:  # noqa: BLE001 - any failure means not reachable
            return f"unreachable: {getattr(exc, 'message', exc)}"
        return "ok"
