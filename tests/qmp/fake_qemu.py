#!/usr/bin/env python3
"""A stand-in for qemu-system-x86_64 that speaks just enough QMP on fd 4
(where maqet's runner gives QEMU its QMP socket) to be run by the real
runner, and stops its "guest" with a run state a real QEMU reaches only
on hardware faults:

  -maqet-fake-internal-error SECONDS   after SECONDS, emit STOP and report
                                       `internal-error` from then on

`quit` and `system_powerdown` end it (exit 0, SHUTDOWN with the matching
reason first). Every other command answers {}.
"""
import json
import os
import socket
import sys
import threading
import time

args = sys.argv[1:]
after = None
if "-maqet-fake-internal-error" in args:
    after = float(args[args.index("-maqet-fake-internal-error") + 1])

sock = socket.socket(fileno=4)
lock = threading.Lock()
state = {"status": "running"}


def send(obj):
    data = (json.dumps(obj) + "\r\n").encode()
    with lock:
        sock.sendall(data)


def event(name, data=None):
    now = time.time()
    send({"event": name, "data": data or {},
          "timestamp": {"seconds": int(now), "microseconds": int(now % 1 * 1e6)}})


def fault():
    time.sleep(after)
    state["status"] = "internal-error"
    print("KVM internal error. Suberror: 1 (fake)", file=sys.stderr, flush=True)
    event("STOP")


send({"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": "fake"},
              "capabilities": []}})
if after is not None:
    threading.Thread(target=fault, daemon=True).start()

buf = b""
while True:
    chunk = sock.recv(65536)
    if not chunk:
        sys.exit(0)
    buf += chunk
    while b"\n" in buf:
        line, buf = buf.split(b"\n", 1)
        if not line.strip():
            continue
        req = json.loads(line)
        cmd, rid = req.get("execute"), req.get("id")
        reply = {}
        if cmd == "query-status":
            reply = {"status": state["status"], "running": state["status"] == "running",
                     "singlestep": False}
        if cmd in ("quit", "system_powerdown"):
            reason = "host-qmp-quit" if cmd == "quit" else "guest-shutdown"
            send({"return": {}, "id": rid})
            event("SHUTDOWN", {"guest": cmd != "quit", "reason": reason})
            sock.close()
            os._exit(0)
        send({"return": reply, "id": rid} if rid is not None else {"return": reply})
