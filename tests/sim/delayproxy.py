"""A TCP proxy on loopback that delays every byte by a fixed time per direction and can cut the link.

It stands in for netem, which this project's kernel lacks (the lab's userspace engine lives on the
gateway and needs a lab): bytes read from one side are written to the other ``delay_s`` later, in order.
``cut(refuse_s)`` resets every open connection and refuses new ones for ``refuse_s`` seconds (a link
outage as the station sees it: the connection drops, reconnection fails, then succeeds). ``blackhole()``
silently stops forwarding (no FIN, no RST), as a dead radio link looks; ``restore()`` ends both.
Runs its own event loop in a thread.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time


class DelayProxy:
    def __init__(self, target_port: int, delay_s: float, target_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.delay_s = delay_s
        self.port = 0
        self.connections = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._refuse_until = 0.0
        self._blackhole = False
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> DelayProxy:
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        # connections still open: end their pumps here, in this loop, not when the garbage collector finds them
        tasks = asyncio.all_tasks(self._loop)
        for task in tasks:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue = asyncio.Queue()

        async def release() -> None:
            while True:
                due, data = await queue.get()
                if data is None:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if self._blackhole:
                    continue
                writer.write(data)
                await writer.drain()

        task = asyncio.create_task(release())
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if self._blackhole:
                    continue
                queue.put_nowait((time.monotonic() + self.delay_s, data))
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:  # the proxy is closing: drop what is queued, close at once
            task.cancel()
            writer.close()
            raise
        finally:
            queue.put_nowait((0.0, None))
            try:
                await task
            except (ConnectionError, OSError, asyncio.CancelledError):
                pass
            try:
                writer.close()
            except (ConnectionError, OSError, RuntimeError):
                pass

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if time.monotonic() < self._refuse_until:
            self._reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self._reset(writer)
            return
        self.connections += 1
        self._writers.update((writer, up_writer))
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        self._writers.difference_update((writer, up_writer))

    @staticmethod
    def _reset(writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.transport.abort()

    def cut(self, refuse_s: float) -> None:
        """Reset every connection now; refuse new ones for ``refuse_s`` seconds."""

        def do() -> None:
            self._refuse_until = time.monotonic() + refuse_s
            for w in list(self._writers):
                self._reset(w)

        self._loop.call_soon_threadsafe(do)

    def blackhole(self) -> None:
        self._loop.call_soon_threadsafe(setattr, self, "_blackhole", True)

    def restore(self) -> None:
        """End a cut or a blackhole; connections that lost bytes in a blackhole are reset."""

        def do() -> None:
            if self._blackhole:
                for w in list(self._writers):
                    self._reset(w)
            self._blackhole = False
            self._refuse_until = 0.0

        self._loop.call_soon_threadsafe(do)
