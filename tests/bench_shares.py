#!/usr/bin/env python3
"""`make bench`, issue 19: file sharing and passt, measured in one run.

- virtiofs against 9p on the same host directory, in the same guest:
  sequential write and read of a 256 MiB file (`dd`, 1 MiB blocks; the
  write ends with fsync, the guest's page cache is dropped before reads).
  The guest boots Debian's generic kernel (the cloud kernel has no 9p):
  MAQET_BENCH_GUEST_GENERIC.
- TCP throughput guest → host, passt against QEMU's user network: the guest
  sends 32 MiB of zeros with `nc` to a sink on the host's 127.0.0.1,
  reached through the gateway address; the host times first to last byte.
  The test guest (cloud kernel): MAQET_BENCH_GUEST.

Run by bench.py (as the session user, `maqet` on PATH), or alone:
`python3 bench_shares.py`."""

import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

QEMU = "/usr/bin/qemu-system-x86_64"
MIB = 256
# Debian 12's passt resets a guest → host connection it has carried for
# ~24 s when the guest is slow (seen twice under TCG on a loaded machine),
# so the network figure moves less data than the file one.
NET_MIB = int(os.environ.get("MAQET_BENCH_NET_MIB", "32"))
READY = "maqet-test-guest: ready"


class Console:
    """`maqet console VM --no-tty --replay` as a shell."""

    def __init__(self, vm):
        self.p = subprocess.Popen(["maqet", "console", vm, "--no-tty", "--replay"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL)
        self.buf = b""
        self.lock = threading.Lock()
        self.n = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        while True:
            b = self.p.stdout.read1(4096)
            if not b:
                return
            with self.lock:
                self.buf += b

    def text(self):
        with self.lock:
            return self.buf.decode(errors="replace").replace("\r", "")

    def wait_for(self, needle, within):
        end = time.monotonic() + within
        while needle not in self.text():
            if time.monotonic() > end:
                raise RuntimeError(f"no {needle!r} within {within}s:\n{self.text()[-2000:]}")
            time.sleep(0.05)
        return self.text()

    def run(self, cmd, within=600):
        self.n += 1
        m = 900000 + self.n
        self.p.stdin.write(f'echo "<$(({m}+1))>"; {cmd}; echo "</$(({m}+1))>"\n'.encode())
        self.p.stdin.flush()
        out = self.wait_for(f"</{m + 1}>", within)
        start = out.rfind(f"<{m + 1}>") + len(f"<{m + 1}>")
        return out[start:out.find(f"</{m + 1}>", start)]

    def close(self):
        self.p.kill()
        self.p.wait()


def add_and_start(d, name, guest, extra, append, memory="256M"):
    y = os.path.join(d, f"{name}.yaml")
    with open(y, "w") as f:
        f.write(f"name: {name}\nbinary: {QEMU}\nmemory: {memory}\nconsole: true\ndisplay: none\n"
                f"shutdown_timeout: 5\n{extra}arguments:\n  - accel: tcg\n"
                f"  - kernel: {guest}/vmlinuz\n  - initrd: {guest}/initrd.gz\n"
                f"  - append: \"console=ttyS0 quiet {append}\"\n")
    subprocess.run(["maqet", "add", y], check=True, capture_output=True)
    subprocess.run(["maqet", "start", name], check=True, capture_output=True)
    c = Console(name)
    c.wait_for(READY, 300)
    return c


def remove(name):
    subprocess.run(["maqet", "rm", "--force", name], capture_output=True)


# busybox `time`: "real\t0m 1.23s" (busybox dd prints no rate).
REAL = re.compile(r"real\s+(\d+)m\s*([0-9.]+)s")


def seconds(out):
    m = REAL.search(out)
    if not m:
        raise RuntimeError(f"no time figure in: {out}")
    return int(m.group(1)) * 60 + float(m.group(2))


def checked(out):
    """dd's output, when it moved the whole file."""
    if f"{MIB}+0 records out" not in out:
        raise RuntimeError(f"dd did not copy {MIB} MiB: {out}")
    return out


def share_bench(d):
    """MiB/s of virtiofs and 9p: {"virtiofs": (write, read), "9p": (write, read)}."""
    guest = os.environ.get("MAQET_BENCH_GUEST_GENERIC")
    if not guest:
        return None
    share = os.path.join(d, "share")
    os.makedirs(share)
    with open(os.path.join(share, "big"), "wb") as f:
        block = os.urandom(1 << 20)
        for _ in range(MIB):
            f.write(block)
    name = f"bench-share-{os.getpid()}"
    extra = (f"shares: [\"{share}:vfs\"]\n"
             # `none`: QEMU (the user) cannot chown files to the guest's
             # root, which `passthrough` tries.
             f"storage:\n  - {{name: p9, type: virtfs, path: {share}, options: {{security_model: none}}}}\n")
    c = add_and_start(d, name, guest, extra, "", memory="1G")
    out = {}
    try:
        said = c.run("mkdir -p /mnt/v /mnt/9 && mount -t virtiofs vfs /mnt/v && "
                     "mount -t 9p -o trans=virtio,version=9p2000.L p9 /mnt/9 2>&1; "
                     "grep -E ' /mnt/(v|9) ' /proc/mounts")
        if " /mnt/v virtiofs " not in said or " /mnt/9 9p " not in said:
            raise RuntimeError(f"the shares did not mount: {said}")
        for label, mnt in (("virtiofs", "/mnt/v"), ("9p", "/mnt/9")):
            w = seconds(checked(c.run(f"time dd if=/dev/zero of={mnt}/w bs=1M count={MIB} conv=fsync 2>&1; rm {mnt}/w")))
            c.run("sync; echo 3 > /proc/sys/vm/drop_caches")
            r = seconds(checked(c.run(f"time dd if={mnt}/big of=/dev/null bs=1M 2>&1")))
            out[label] = (MIB / w, MIB / r)
    finally:
        c.close()
        remove(name)
    return out


def sink(listener, result):
    """Counts what one connection sends; records first-to-last-byte time."""
    conn, _ = listener.accept()
    total, first = 0, None
    while total < NET_MIB << 20:
        b = conn.recv(1 << 20)
        if not b:
            break
        if first is None:
            first = time.perf_counter()
        total += len(b)
    result["s"] = time.perf_counter() - first
    result["bytes"] = total
    conn.close()


def net_bench(d):
    """MiB/s guest → host over TCP: {"passt": x, "user": y}."""
    guest = os.environ.get("MAQET_BENCH_GUEST")
    if not guest:
        return None
    out = {}
    for mode, append in (("passt", "maqet.dhcp"), ("user", "")):
        name = f"bench-net-{mode}-{os.getpid()}"
        l = socket.socket()
        l.bind(("127.0.0.1", 0))
        l.listen(1)
        port = l.getsockname()[1]
        result = {}
        t = threading.Thread(target=sink, args=(l, result), daemon=True)
        t.start()
        c = add_and_start(d, name, guest, f"network: {mode}\n", append)
        try:
            gw = c.run("ip route | awk '/^default/{print $3}'").strip()
            said = c.run(f"dd if=/dev/zero bs=1M count={NET_MIB} 2>/dev/null | timeout 600 nc {gw} {port}; echo nc=$?")
            t.join(60)
            if result.get("bytes") != NET_MIB << 20:
                raise RuntimeError(f"{mode}: the sink got {result}; the guest said: {said}")
            out[mode] = NET_MIB / result["s"]
        finally:
            c.close()
            remove(name)
            l.close()
    return out


def rows(shares, net):
    lines = []
    if shares:
        (vw, vr), (pw, pr) = shares["virtiofs"], shares["9p"]
        lines.append(f"virtiofs {MIB} MiB seq. write / read : {vw:7.1f} / {vr:7.1f} MiB/s")
        lines.append(f"9p       {MIB} MiB seq. write / read : {pw:7.1f} / {pr:7.1f} MiB/s   "
                     f"virtiofs {vw / pw:5.2f}x / {vr / pr:5.2f}x (target reads ≥ 3.00x)")
    if net:
        lines.append(f"TCP guest → host, {NET_MIB} MiB, passt        : {net['passt']:7.1f} MiB/s")
        lines.append(f"TCP guest → host, {NET_MIB} MiB, user network : {net['user']:7.1f} MiB/s   "
                     f"passt {net['passt'] / net['user']:5.2f}x")
    return lines


def main():
    with tempfile.TemporaryDirectory(prefix="maqet-bench-shares-") as d:
        os.environ["MAQET_DATA_DIR"] = os.path.join(d, "data")
        s = None if os.environ.get("MAQET_BENCH_SKIP_SHARES") else share_bench(d)
        n = None if os.environ.get("MAQET_BENCH_SKIP_NET") else net_bench(d)
    print("\n".join(rows(s, n)))


if __name__ == "__main__":
    sys.exit(main())
