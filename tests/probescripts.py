"""Small programs the tests run on lab hosts (namespaces or VMs, with ``python -c``): a TCP echo pair that
shows whether a connection survives a change of the link, and a UDP sender/receiver that numbers datagrams so
the receiver knows exactly which were lost."""

TCP_SERVER = """
import json, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 9997)); s.listen(4); s.settimeout(30)
print("ready", flush=True)
c, _ = s.accept(); c.settimeout(30)
n, err = 0, None
try:
    while True:
        b = c.recv(65536)
        if not b:
            break
        n += len(b)
        c.sendall(b)
except OSError as exc:
    err = repr(exc)
s.settimeout(0.2)
try:
    s.accept(); more = 1
except OSError:
    more = 0
c.close()
print(json.dumps({"bytes": n, "error": err, "other_connections": more}))
"""
TCP_CLIENT = """
import json, socket, sys, threading, time
deadline = time.monotonic() + 20
while True:  # the server may still be starting (a Python start on an emulated VM takes seconds)
    try:
        c = socket.create_connection((sys.argv[1], 9997), timeout=30)
        break
    except ConnectionRefusedError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.1)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
end = time.monotonic() + float(sys.argv[2])
out = {"sent": 0, "echoed": 0, "error": None}
def read():
    try:
        while True:
            b = c.recv(65536)
            if not b:
                return
            out["echoed"] += len(b)
    except OSError as exc:
        out["error"] = repr(exc)
t = threading.Thread(target=read); t.start()
try:
    while time.monotonic() < end:
        c.sendall(b"x" * 100); out["sent"] += 100
        time.sleep(0.02)
    c.shutdown(socket.SHUT_WR)
except OSError as exc:
    out["error"] = repr(exc)
t.join(30)
print(json.dumps(out))
"""


UDP_RECV = """
import json, socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE: no datagram may be lost at the receiver
s.bind(("0.0.0.0", 9998)); s.settimeout(60)  # until the sender starts ...
got = []
print("ready", flush=True)
try:
    while True:
        got.append(int(s.recv(64)[:8]))
        s.settimeout(1.5)  # ... then until 1.5 s pass without a datagram
except socket.timeout:
    pass
print(json.dumps(got))
"""
UDP_SEND = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
n, dst = int(sys.argv[1]), sys.argv[2]
batch = int(sys.argv[3]) if len(sys.argv) > 3 else 20
for i in range(n):
    s.sendto(b"%08d" % i + b"x" * 32, (dst, 9998))
    if i % batch == batch - 1:
        time.sleep(0.002)  # batch 20: about 10,000 packets/s, the engine keeps up; nothing is dropped but by
                           # the model (an emulated VM takes fewer: a smaller batch)
"""
