#!/usr/bin/env python3
"""The transport's own floor: a bare WebSocket echo (websockets + the same event loop, no OCPP at all).

Usage (inside two namespaces; benchmarks/sim_overhead.py --floor runs it for you):
    ws_floor.py server HOST PORT RESPONSE_BYTES [LOOP]
    ws_floor.py client URL COUNT INTERVAL_S REQUEST_BYTES [LOOP]     (LOOP: auto, asyncio or uvloop)
    ws_floor.py tcp-server HOST PORT RESPONSE_BYTES REQUEST_BYTES [LOOP]
    ws_floor.py tcp-client HOST:PORT COUNT INTERVAL_S REQUEST_BYTES RESPONSE_BYTES [LOOP]

The tcp-* pair does the same over a plain TCP connection (asyncio streams, no WebSocket framing): what
Python and the event loop cost on this host before any protocol.

The server answers every text frame with a text frame of RESPONSE_BYTES; the client sends COUNT frames
of REQUEST_BYTES, INTERVAL_S after each answer, and prints one round-trip time per line in nanoseconds
(from just before ``send`` to ``recv`` returning), the same boundaries labkit's fleet times an OCPP call
with. Compression off, as labkit's default. Whatever this costs above ping, no OCPP simulator written on
websockets can avoid; what labkit adds is the OCPP round trip minus this.
"""

from __future__ import annotations

import asyncio
import sys
import time


def _loop(kind: str) -> None:
    if kind in ("auto", "uvloop"):
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            if kind == "uvloop":
                raise


async def server(host: str, port: int, response_bytes: int) -> None:
    from websockets.asyncio.server import serve

    answer = '[3,"' + "r" * max(0, response_bytes - 8) + '",{}]'

    async def echo(ws) -> None:
        async for _ in ws:
            await ws.send(answer)

    async with serve(echo, host, port, compression=None, ping_interval=None):
        print("listening", flush=True)
        await asyncio.Future()


async def client(url: str, count: int, interval_s: float, request_bytes: int) -> None:
    from websockets.asyncio.client import connect

    frame = '[2,"' + "q" * max(0, request_bytes - 8) + '",{}]'
    ns = time.monotonic_ns
    async with connect(url, compression=None, ping_interval=None) as ws:
        for _ in range(count):
            await asyncio.sleep(interval_s)
            t = ns()
            await ws.send(frame)
            await ws.recv()
            print(ns() - t)


async def tcp_server(host: str, port: int, response_bytes: int, request_bytes: int) -> None:
    answer = b"r" * response_bytes

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readexactly(request_bytes)
                writer.write(answer)
        except asyncio.IncompleteReadError:
            writer.close()

    server = await asyncio.start_server(echo, host, port)
    async with server:
        print("listening", flush=True)
        await asyncio.Future()


async def tcp_client(addr: str, count: int, interval_s: float, request_bytes: int, response_bytes: int) -> None:
    import socket

    host, port = addr.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    frame = b"q" * request_bytes
    ns = time.monotonic_ns
    for _ in range(count):
        await asyncio.sleep(interval_s)
        t = ns()
        writer.write(frame)
        await reader.readexactly(response_bytes)
        print(ns() - t)
    writer.close()


def main(argv: list[str]) -> None:
    if argv[0] == "tcp-server":
        _loop(argv[5] if len(argv) > 5 else "auto")
        asyncio.run(tcp_server(argv[1], int(argv[2]), int(argv[3]), int(argv[4])))
    elif argv[0] == "tcp-client":
        _loop(argv[6] if len(argv) > 6 else "auto")
        asyncio.run(tcp_client(argv[1], int(argv[2]), float(argv[3]), int(argv[4]), int(argv[5])))
    elif argv[0] == "server":
        _loop(argv[4] if len(argv) > 4 else "auto")
        asyncio.run(server(argv[1], int(argv[2]), int(argv[3])))
    else:
        _loop(argv[5] if len(argv) > 5 else "auto")
        asyncio.run(client(argv[1], int(argv[2]), float(argv[3]), int(argv[4])))


if __name__ == "__main__":
    main(sys.argv[1:])
