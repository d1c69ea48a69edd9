"""A WebSocket relay on loopback that loses one CSMS answer on purpose, as a broken link would.

Stations connect to it as to the CSMS (same path, same subprotocol offer); it opens its own connection to
the real CSMS and relays every text frame both ways. ``DropAnswer(action, nth)`` picks one answer: the
CSMS's reply to the station's ``nth`` CALL of ``action`` is swallowed and the station's TCP connection is
aborted at once (no close frame: the link died after the CSMS had handled the message and before its
answer arrived). The station must send that message again on a new connection, so the CSMS receives it
twice: OCPP's at-least-once delivery, made to happen. Runs its own event loop in a thread.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

SERVED = ["ocpp1.6", "ocpp2.0.1", "ocpp2.1"]


@dataclass
class DropAnswer:
    action: str
    nth: int
    seen: int = 0
    dropped_id: str = ""  # the message id whose answer was lost
    calls: dict[str, str] = field(default_factory=dict)  # message id -> action, of the stations' CALLs


class WsProxy:
    def __init__(self, target_url: str, drop: DropAnswer):
        self.target = target_url.rstrip("/")
        self.drop = drop
        self.port = 0
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> WsProxy:
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()

        def choose(conn: ServerConnection, offered: list[str]) -> str | None:
            return next((p for p in offered if p in SERVED), None)

        async with serve(
            self._handle, "127.0.0.1", 0, select_subprotocol=choose, ping_interval=None, compression=None
        ) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    async def _handle(self, station: ServerConnection) -> None:
        self.connections += 1
        path = station.request.path
        async with connect(
            self.target + path, subprotocols=[station.subprotocol], ping_interval=None, compression=None
        ) as csms:

            async def up() -> None:
                async for frame in station:
                    try:
                        msg = json.loads(frame)
                        if msg[0] == 2:
                            self.drop.calls[msg[1]] = msg[2]
                    except (ValueError, IndexError, TypeError):
                        pass
                    await csms.send(frame)

            async def down() -> None:
                d = self.drop
                async for frame in csms:
                    msg = json.loads(frame)
                    if not d.dropped_id and msg[0] == 3 and d.calls.get(msg[1]) == d.action:
                        d.seen += 1
                        if d.seen == d.nth:
                            d.dropped_id = msg[1]
                            station.transport.abort()  # the answer is lost with the link
                            return
                    await station.send(frame)

            tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            except ConnectionClosed:
                pass
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
