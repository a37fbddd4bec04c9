#!/usr/bin/env python3
"""maqet benchmark (`make bench`): measures, in one run and on one machine,
bare QEMU's exec-to-query-status time and maqet's start, QMP round trip,
`ls` with 200 VMs defined and with 0, 1, 10 and 50 of them running, and the
runner's RSS, and prints the ratios against the targets. Run as the session user with `maqet` on PATH (tests/bench.sh)."""

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

QEMU = "/usr/bin/qemu-system-x86_64"
VM_ARGS = ["-m", "64M", "-accel", "tcg", "-display", "none", "-nodefaults"]
RUNS = int(os.environ.get("MAQET_BENCH_RUNS", "10"))


def bare_qemu_once():
    """exec → QMP greeting → qmp_capabilities → query-status answered."""
    ours, theirs = socket.socketpair()
    fd = theirs.fileno()
    t0 = time.perf_counter()
    p = subprocess.Popen(
        [QEMU, "-chardev", f"socket,id=qmp,fd={fd}", "-mon", "chardev=qmp,mode=control"] + VM_ARGS,
        pass_fds=[fd], stdin=subprocess.DEVNULL)
    theirs.close()
    f = ours.makefile("rwb", buffering=0)
    f.readline()  # greeting
    f.write(b'{"execute":"qmp_capabilities"}\n')
    f.readline()
    f.write(b'{"execute":"query-status"}\n')
    while b'"return"' not in f.readline():
        pass
    took = time.perf_counter() - t0
    p.kill()
    p.wait()
    return took


def run(*args, check=True):
    return subprocess.run(["maqet", *args], check=check, capture_output=True, text=True)


def timed(*args):
    t0 = time.perf_counter()
    run(*args)
    return time.perf_counter() - t0


LS_RUNNING = [0, 1, 10, 50]


def start_all(names, batch=10):
    """Starts VMs a batch at a time (each `maqet start` waits for READY=1)."""
    for i in range(0, len(names), batch):
        procs = [subprocess.Popen(["maqet", "start", n], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
                 for n in names[i:i + batch]]
        for p in procs:
            _, err = p.communicate()
            if p.returncode != 0:
                raise RuntimeError(f"maqet start failed: {err}")


def stop_all(names, batch=10):
    for i in range(0, len(names), batch):
        procs = [subprocess.Popen(["maqet", "stop", "--force", n], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for n in names[i:i + batch]]
        for p in procs:
            p.wait()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def ms(x):
    return f"{x * 1000:7.1f} ms"


def main():
    with tempfile.TemporaryDirectory(prefix="maqet-bench-") as d:
        os.environ["MAQET_DATA_DIR"] = os.path.join(d, "data")
        vm = f"bench-{os.getpid()}"
        yaml = os.path.join(d, "vm.yaml")
        with open(yaml, "w") as f:
            f.write(f"name: {vm}\nbinary: {QEMU}\nmemory: 64M\narguments:\n"
                    "  - accel: tcg\n  - display: none\n  - nodefaults\n")
        run("add", yaml)

        bare_qemu_once()  # warm the page cache for both
        bare = [bare_qemu_once() for _ in range(RUNS)]
        starts, rss = [], []
        for _ in range(RUNS):
            starts.append(timed("start", vm))
            st = json.loads(run("status", vm, "--json").stdout)
            time.sleep(0.5)  # let the runner settle (watchdog, IPC) before RSS
            rss.append(rss_kib(st["runner_pid"]))
            run("stop", vm, "--force")
        run("start", vm)
        qmp = [timed("qmp", "run", vm, "query-status") for _ in range(RUNS * 3)]
        run("stop", vm, "--force")

        os.environ["MAQET_DATA_DIR"] = os.path.join(d, "data200")
        for i in range(200):
            y = os.path.join(d, f"v{i}.yaml")
            with open(y, "w") as f:
                f.write(f"name: ls{i}-{os.getpid()}\nbinary: {QEMU}\nmemory: 64M\n")
            run("add", y)
        assert len(json.loads(run("ls", "--json").stdout)) == 200
        ls = [timed("ls") for _ in range(RUNS)]

        # `ls` while VMs run: its cost must not grow with the running VMs.
        os.environ["MAQET_DATA_DIR"] = os.path.join(d, "data-running")
        names = []
        for i in range(LS_RUNNING[-1]):
            n = f"run{i}-{os.getpid()}"
            y = os.path.join(d, f"r{i}.yaml")
            # `-machine none`: no guest CPU. A default PC machine runs
            # SeaBIOS looking for a boot device at ≈ 1-2 % of a core each,
            # and 50 of them on this 2-core machine would measure the CPU
            # contention they cause, not `ls`.
            with open(y, "w") as f:
                f.write(f"name: {n}\nbinary: {QEMU}\nmemory: 32M\narguments:\n"
                        "  - machine: none\n  - accel: tcg\n  - display: none\n  - nodefaults\n")
            run("add", y)
            names.append(n)
        ls_running = {}
        started = 0
        try:
            for want in LS_RUNNING:
                start_all(names[started:want])
                started = want
                listed = json.loads(run("ls", "--json").stdout)
                assert sum(v["state"] == "running" for v in listed) == want, listed
                timed("ls")  # warm
                ls_running[want] = statistics.median(timed("ls") for _ in range(RUNS))
        finally:
            stop_all(names[:started])

    b, s, q, l = (statistics.median(x) for x in (bare, starts, qmp, ls))
    r = statistics.median(rss)
    print(f"runs per figure: {RUNS} (medians)")
    print(f"bare QEMU exec → query-status : {ms(b)}   (baseline)")
    print(f"maqet start                   : {ms(s)}   ratio {s / b:5.2f}x   (target ≤ 1.50x)")
    print(f"runner RSS                    : {r / 1024:7.2f} MiB (target ≤ 4 MiB)")
    print(f"maqet qmp run … query-status  : {ms(q)}   (target ≤ 5 ms)")
    print(f"maqet ls, 200 VMs defined     : {ms(l)}   (target ≤ 20 ms)")
    one = ls_running[1]
    for n in LS_RUNNING:
        t = ls_running[n]
        target = "   (target ≤ 20 ms and ≤ 2.00x)" if n == LS_RUNNING[-1] else ""
        print(f"maqet ls, {n:2d} VMs running     : {ms(t)}   ratio {t / one:5.2f}x vs 1 running{target}")
    print(json.dumps({"bare_qemu_s": b, "start_s": s, "start_ratio": s / b, "runner_rss_kib": r,
                      "qmp_s": q, "ls200_s": l,
                      "ls_running_s": {str(k): v for k, v in ls_running.items()}}))


if __name__ == "__main__":
    sys.exit(main())
