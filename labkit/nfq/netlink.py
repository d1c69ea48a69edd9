"""A minimal NFQUEUE client over a raw netlink socket, in pure Python (no compiled dependency).

It speaks just enough of nfnetlink_queue (linux/netfilter/nfnetlink_queue.h) for the userspace engine:
bind a queue (copy mode, queue length, flags), receive queued packets (id, length, payload when copied),
and give verdicts one by one or in a batch (``NFQNL_MSG_VERDICT_BATCH``: one verdict for every packet of
the queue whose id is <= N, in order).
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFNETLINK_V0 = 0

NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQNL_MSG_VERDICT_BATCH = 3

NFQNL_CFG_CMD_BIND = 1
NFQNL_CFG_CMD_UNBIND = 2

NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQA_CFG_MASK = 4
NFQA_CFG_FLAGS = 5

NFQA_CFG_F_FAIL_OPEN = 1
NFQA_CFG_F_GSO = 4

NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_TIMESTAMP = 4  # struct nfqnl_msg_packet_timestamp: sec, usec (big-endian u64), CLOCK_REALTIME
NFQA_PAYLOAD = 10
NFQA_CAP_LEN = 13

COPY_NONE, COPY_META, COPY_PACKET = 0, 1, 2

NF_DROP = 0
NF_ACCEPT = 1

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 1
NLM_F_ACK = 4

SOL_NETLINK = 270
SO_RCVBUFFORCE = 33  # not exported by Python's socket module
NETLINK_NO_ENOBUFS = 5

_NLMSGHDR = struct.Struct("=IHHII")
_NFGENMSG = struct.Struct("=BBH")  # family, version, res_id (big-endian: packed by hand)
_NLA = struct.Struct("=HH")
_TSTAMP = struct.Struct("!QQ")
_HDR_LEN = _NLMSGHDR.size + _NFGENMSG.size  # 20


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attr(kind: int, data: bytes) -> bytes:
    length = _NLA.size + len(data)
    return _NLA.pack(length, kind) + data + b"\0" * (_align(length) - length)


class NetlinkError(OSError):
    """The kernel refused a request (errno from an NLMSG_ERROR answer)."""


@dataclass(slots=True)
class Packet:
    queue: int
    id: int
    length: int  # length of the packet in the kernel (bytes, network layer)
    payload: bytes | None  # the packet itself when the queue copies packets
    tstamp_ns: int = 0  # the kernel's timestamp of the packet (CLOCK_REALTIME, us resolution); 0 if none


class NfqSocket:
    """One netlink socket that can serve several queues (one per direction)."""

    def __init__(self, rcvbuf: int = 8 << 20):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.bind((0, 0))
        self.portid = self.sock.getsockname()[0]
        for opt in (SO_RCVBUFFORCE, socket.SO_RCVBUF):  # FORCE needs CAP_NET_ADMIN
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, opt, rcvbuf)
                break
            except OSError:
                continue
        try:  # a full receive buffer drops packets (counted by the kernel) instead of failing recv
            self.sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
        except OSError:
            pass
        self._seq = 0
        self._buf = bytearray(1 << 18)

    def close(self) -> None:
        self.sock.close()

    def fileno(self) -> int:
        return self.sock.fileno()

    # -- requests ------------------------------------------------------------------------------------------
    def _message(self, msg: int, queue: int, payload: bytes, flags: int = NLM_F_REQUEST,
                 family: int = socket.AF_UNSPEC) -> bytes:
        self._seq += 1
        body = _NFGENMSG.pack(family, NFNETLINK_V0, 0)[:2] + struct.pack("!H", queue) + payload
        return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg, flags,
                              self._seq, 0) + body

    def _request_ack(self, data: bytes) -> None:
        """Send a request with NLM_F_ACK and wait for its answer; raise NetlinkError on failure.

        Used only while configuring, before any packet is queued to this socket."""
        seq = self._seq
        self.sock.send(data)
        while True:
            n = self.sock.recv_into(self._buf)
            off = 0
            while off + _NLMSGHDR.size <= n:
                length, kind, _flags, mseq, _pid = _NLMSGHDR.unpack_from(self._buf, off)
                if length < _NLMSGHDR.size:
                    break
                if kind == NLMSG_ERROR and mseq == seq:
                    (err,) = struct.unpack_from("=i", self._buf, off + _NLMSGHDR.size)
                    if err:
                        raise NetlinkError(-err, os.strerror(-err))
                    return
                off += _align(length)

    def bind(self, queue: int, *, copy_mode: int = COPY_META, copy_range: int = 0xFFFF,
             maxlen: int = 1024, fail_open: bool = False, gso: bool = False) -> None:
        """Bind ``queue`` to this socket: packets the kernel queues there come to us."""
        cmd = _attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, socket.AF_INET))
        self._request_ack(self._message(NFQNL_MSG_CONFIG, queue, cmd, NLM_F_REQUEST | NLM_F_ACK))
        params = _attr(NFQA_CFG_PARAMS, struct.pack("!IB", copy_range, copy_mode))
        params += _attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", maxlen))
        flags = (NFQA_CFG_F_FAIL_OPEN if fail_open else 0) | (NFQA_CFG_F_GSO if gso else 0)
        mask = NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO
        params += _attr(NFQA_CFG_FLAGS, struct.pack("!I", flags)) + _attr(NFQA_CFG_MASK, struct.pack("!I", mask))
        self._request_ack(self._message(NFQNL_MSG_CONFIG, queue, params, NLM_F_REQUEST | NLM_F_ACK))

    def unbind(self, queue: int) -> None:
        cmd = _attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_UNBIND, socket.AF_INET))
        self.sock.send(self._message(NFQNL_MSG_CONFIG, queue, cmd))

    # -- verdicts --------------------------------------------------------------------------------------------
    def verdict(self, queue: int, packet_id: int, verdict: int = NF_ACCEPT, payload: bytes | None = None) -> None:
        """A verdict for one packet (optionally replacing its content)."""
        body = _attr(NFQA_VERDICT_HDR, struct.pack("!II", verdict, packet_id))
        if payload is not None:
            body += _attr(NFQA_PAYLOAD, payload)
        self.sock.send(self._message(NFQNL_MSG_VERDICT, queue, body))

    def verdict_batch(self, queue: int, last_id: int, verdict: int = NF_ACCEPT) -> None:
        """The same verdict for every packet still queued whose id is <= ``last_id``."""
        body = _attr(NFQA_VERDICT_HDR, struct.pack("!II", verdict, last_id))
        self.sock.send(self._message(NFQNL_MSG_VERDICT_BATCH, queue, body))

    # -- packets ---------------------------------------------------------------------------------------------
    def receive(self) -> list[Packet]:
        """Block until at least one message arrives; return the packets in it (errors are ignored)."""
        n = self.sock.recv_into(self._buf)
        return parse_packets(memoryview(self._buf)[:n])


def parse_packets(data: memoryview | bytes) -> list[Packet]:
    out: list[Packet] = []
    off = 0
    n = len(data)
    while off + _HDR_LEN <= n:
        length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, off)
        if length < _NLMSGHDR.size or off + length > n:
            break
        if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
            (queue,) = struct.unpack_from("!H", data, off + _NLMSGHDR.size + 2)
            pid = -1
            plen = -1
            payload = None
            tstamp = 0
            aoff = off + _HDR_LEN
            end = off + length
            while aoff + 4 <= end:
                alen, atype = _NLA.unpack_from(data, aoff)
                if alen < 4:
                    break
                atype &= 0x3FFF
                if atype == NFQA_PACKET_HDR:
                    (pid,) = struct.unpack_from("!I", data, aoff + 4)
                elif atype == NFQA_PAYLOAD:
                    payload = bytes(data[aoff + 4:aoff + alen])
                elif atype == NFQA_CAP_LEN:
                    (plen,) = struct.unpack_from("!I", data, aoff + 4)
                elif atype == NFQA_TIMESTAMP and alen >= 20:
                    sec, usec = _TSTAMP.unpack_from(data, aoff + 4)
                    tstamp = sec * 1_000_000_000 + usec * 1000
                aoff += _align(alen)
            if plen < 0:
                plen = len(payload) if payload is not None else 0
            if pid >= 0:
                out.append(Packet(queue, pid, plen, payload, tstamp))
        off += _align(length)
    return out


def kernel_queue_stats(path: str = "/proc/net/netfilter/nfnetlink_queue") -> dict[int, dict[str, int]]:
    """The kernel's own counters per bound queue (queue_total, queue_dropped, user_dropped, id_sequence)."""
    stats: dict[int, dict[str, int]] = {}
    try:
        with open(path) as fh:
            for line in fh:
                f = line.split()
                if len(f) < 8:
                    continue
                stats[int(f[0])] = {"peer_portid": int(f[1]), "queue_total": int(f[2]), "copy_mode": int(f[3]),
                                    "copy_range": int(f[4]), "queue_dropped": int(f[5]),
                                    "user_dropped": int(f[6]), "id_sequence": int(f[7])}
    except OSError:
        pass
    return stats
