"""Serving an ASGI app with uvicorn inside a process that owns its own event loop and signals.

The relay serves several doors from one supervisor (union API, SMS webhook), and the
dashboard and the union's web app serve one each; all of them use :class:`AsgiServer`::

    server = AsgiServer(app, "127.0.0.1", 0, name="SMS webhook")
    await server.start()          # bound and listening when it returns; port in server.port
    ...
    await server.stop()           # stop accepting, finish open requests (bounded), return

or ``await server.serve_until(stopping)``. The socket is bound here, before uvicorn runs,
so a port in use is an :class:`OSError` that names the door (uvicorn itself would exit the
process), and connections that arrive before uvicorn's first tick wait in the backlog.
uvicorn's own signal handlers are not installed: the process's supervisor owns SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

__all__ = ["AsgiServer"]

log = logging.getLogger(__name__)

#: How long open requests may take to finish once a door is stopping.
GRACE_S = 5


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class AsgiServer:
    """One ASGI app on ``host:port`` (``port`` 0: a free one) on the running loop."""

    def __init__(self, app: ASGIApp, host: str, port: int, *, name: str) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.name = name
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind and start serving; :class:`OSError` naming the door when it cannot listen."""
        if self._task is not None:
            raise RuntimeError(f"{self.name} is already serving")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        try:
            sock = socket.create_server((self.host, self.port), family=family)
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"the {self.name} cannot listen on {self.host}:{self.port}: {exc.strerror}; "
                "free the port or configure another",
            ) from exc
        sock.setblocking(False)
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self.app,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=GRACE_S,
            server_header=False,
        )
        self._server = _QuietServer(config)
        self._task = asyncio.create_task(
            self._server.serve(sockets=[sock]), name=f"serve {self.name}"
        )
        log.info("%s listening on %s:%d", self.name, self.host, self.port)

    async def stop(self) -> None:
        """Stop accepting, let open requests finish (at most ``GRACE_S``), and return."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        task, self._task, self._server = self._task, None, None
        await task
        log.info("%s stopped", self.name)

    async def serve_until(
        self, stopping: asyncio.Event, started: asyncio.Event | None = None
    ) -> None:
        """Serve until ``stopping`` is set (or uvicorn fails: its error is raised here);
        ``started`` is set once the door listens (its port is then in :attr:`port`)."""
        await self.start()
        if started is not None:
            started.set()
        assert self._task is not None
        task = self._task
        waiter = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            if task.done():
                self._task = self._server = None
                task.result()  # uvicorn stopped by itself: say why
            else:
                await self.stop()
