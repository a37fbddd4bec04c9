#!/usr/bin/env python3
"""maqet benchmark (`make bench`): measures, in one run and on one machine,
bare QEMU's exec-to-query-status time and maqet's start, QMP round trip,
`ls` with 200 VMs defined and with 0, 1, 10 and 50 of them running, the
runner's RSS, `maqet image pull` against `curl -o` of the same file from
the same local server, and `maqet launch` of the test guest to a working
ssh, virtiofs against 9p and passt against the user network
(bench_shares.py), and `maqet suspend`/`start` (save and restore of the
running state) of a 256 MiB and a 1 GiB test guest whose RAM is filled
with random data, against `dd` of as many bytes to the same file system,
and `maqet -H localhost ls` and `qmp run` against `ssh localhost true`
(bench_remote.py); prints the ratios against the targets. Run as the
session user with `maqet` on PATH (tests/bench.sh). MAQET_BENCH_ONLY=save
measures only the save rows, MAQET_BENCH_ONLY=remote only the -H rows,
MAQET_BENCH_ONLY=start only bare QEMU, the systemd floor, `maqet start`,
the runner's RSS and the QMP round trip (a quick A/B of a change to the
start path)."""

import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import bench_remote
import bench_shares

QEMU = "/usr/bin/qemu-system-x86_64"
VM_ARGS = ["-m", "64M", "-accel", "tcg", "-display", "none", "-nodefaults"]
RUNS = int(os.environ.get("MAQET_BENCH_RUNS", "10"))


def qmp_query_status(f):
    """Reads QEMU's QMP greeting on `f`, negotiates, and waits for the answer
    to `query-status`."""
    f.readline()  # greeting
    f.write(b'{"execute":"qmp_capabilities"}\n')
    f.readline()
    f.write(b'{"execute":"query-status"}\n')
    while b'"return"' not in f.readline():
        pass


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
    qmp_query_status(f)
    took = time.perf_counter() - t0
    p.kill()
    p.wait()
    return took


def systemd_run_once(d, i):
    """The systemd floor: `systemd-run --user` of the same QEMU command (QMP on
    a socket QEMU listens on) until `query-status` is answered, as `maqet
    start` is timed until its runner has had that answer. The connect loop
    polls every 0.5 ms, so the floor is at most that much too high."""
    sock = os.path.join(d, f"floor{i}.qmp")
    unit = f"bench-floor-{os.getpid()}-{i}"
    t0 = time.perf_counter()
    subprocess.run(["systemd-run", "--user", "--quiet", "--collect", f"--unit={unit}",
                    "-p", "Type=exec", "--", QEMU, "-chardev", f"socket,id=qmp,path={sock},server=on,wait=off",
                    "-mon", "chardev=qmp,mode=control"] + VM_ARGS, check=True)
    s = socket.socket(socket.AF_UNIX)
    while True:
        try:
            s.connect(sock)
            break
        except (FileNotFoundError, ConnectionRefusedError):
            time.sleep(0.0005)
    f = s.makefile("rwb", buffering=0)
    qmp_query_status(f)
    took = time.perf_counter() - t0
    s.close()
    subprocess.run(["systemctl", "--user", "stop", unit], check=True)
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


PULL_MIB = int(os.environ.get("MAQET_BENCH_PULL_MIB", "512"))


def image_bench(d):
    """Download throughput of `maqet image pull` and `curl -o` from one local
    server, alternating, and launch-to-ssh of the test guest (with its
    images pulled, and from the cache)."""
    srv = os.path.join(d, "srv")
    os.makedirs(srv)
    big = os.path.join(srv, "big.img")
    h = hashlib.sha256()
    with open(big, "wb") as f:
        for _ in range(PULL_MIB):
            chunk = os.urandom(1 << 20)
            h.update(chunk)
            f.write(chunk)
    digest = h.hexdigest()
    server = subprocess.Popen(["python3", os.path.join(os.path.dirname(__file__), "image_server.py"), srv],
                              stdout=subprocess.PIPE, text=True)
    port = int(server.stdout.readline())
    url = f"http://127.0.0.1:{port}/big.img"
    env = dict(os.environ)
    env.update({"XDG_CACHE_HOME": os.path.join(d, "cache"), "XDG_CONFIG_HOME": os.path.join(d, "config"),
                "HOME": os.path.join(d, "home"), "MAQET_IMAGES_DIRS": os.path.join(d, "pkg"),
                "MAQET_DATA_DIR": os.path.join(d, "data-launch")})
    for k in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(k, None)
    try:
        subprocess.run(["curl", "-s", "-o", "/dev/null", url], check=True)  # warm the page cache
        curl, pull = [], []
        for _ in range(max(3, RUNS // 3)):
            out = os.path.join(d, "curl.out")
            t0 = time.perf_counter()
            subprocess.run(["curl", "-s", "-o", out, url], check=True)
            curl.append(time.perf_counter() - t0)
            os.remove(out)
            shutil.rmtree(env["XDG_CACHE_HOME"], ignore_errors=True)
            t0 = time.perf_counter()
            subprocess.run(["maqet", "image", "pull", url, "--digest", f"sha256:{digest}"],
                           check=True, env=env, capture_output=True)
            pull.append(time.perf_counter() - t0)
        shutil.rmtree(env["XDG_CACHE_HOME"], ignore_errors=True)
        launch = launch_bench(d, srv, port, env)
    finally:
        server.kill()
        server.wait()
    return statistics.median(curl), statistics.median(pull), launch


def launch_bench(d, srv, port, env):
    guest = os.environ.get("MAQET_BENCH_GUEST")
    if not guest:
        return None
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", os.path.join(srv, "disk.qcow2"), "32M"], check=True)
    for name in ("vmlinuz", "initrd.gz"):
        shutil.copy(os.path.join(guest, name), os.path.join(srv, name))
    with open(os.path.join(srv, "SHA256SUMS"), "w") as f:
        for name in ("disk.qcow2", "vmlinuz", "initrd.gz"):
            with open(os.path.join(srv, name), "rb") as g:
                f.write(f"{hashlib.sha256(g.read()).hexdigest()}  {name}\n")
    u = f"http://127.0.0.1:{port}"
    os.makedirs(os.path.join(d, "config/maqet/images.d"))
    with open(os.path.join(d, "config/maqet/images.d/testguest.yaml"), "w") as f:
        f.write(f"description: maqet test guest\narch:\n  x86_64:\n    location: {u}/disk.qcow2\n"
                f"    checksums: {u}/SHA256SUMS\n    kernel: {{location: {u}/vmlinuz, checksums: {u}/SHA256SUMS}}\n"
                f"    initrd: {{location: {u}/initrd.gz, checksums: {u}/SHA256SUMS}}\n"
                "    cmdline: \"console=ttyS0 quiet\"\ndefaults: {memory: 256M, cpu: 1, disk: 64M, user: tester}\n")
    os.makedirs(os.path.join(d, "home/.ssh"))
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(d, "home/.ssh/id_ed25519")],
                   check=True)
    times = {}
    for label in ("pull + launch", "launch (cached)"):
        name = f"bench-launch-{os.getpid()}"
        t0 = time.perf_counter()
        # TCG: nested KVM hangs Linux guests on this kind of machine.
        subprocess.run(["maqet", "launch", "testguest", "--name", name, "--set", "enable_kvm=false"],
                       check=True, env=env, capture_output=True)
        times[label] = time.perf_counter() - t0
        subprocess.run(["maqet", "ssh", name, "--", "true"], check=True, env=env)
        subprocess.run(["maqet", "rm", "--force", "--delete-storage", name], check=True, env=env,
                       capture_output=True)
    return times


SAVE_MIB = [256, 1024]
SAVE_RUNS = int(os.environ.get("MAQET_BENCH_SAVE_RUNS", "3"))


def guest_console(vm, command, marker, within=600):
    """Runs `command` in the test guest's shell and waits for `marker`
    (computed by the shell, so the echoed command never matches it)."""
    p = subprocess.Popen(["maqet", "console", vm, "--no-tty"], stdin=subprocess.PIPE,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    p.stdin.write(f"{command}; echo \"<$((1+{marker}))>\"\n".encode())
    p.stdin.flush()
    want = f"<{1 + marker}>"
    end = time.monotonic() + within
    try:
        while want not in run("console", vm, "--dump").stdout:
            if time.monotonic() > end:
                raise RuntimeError(f"{vm}: no {want} after {command!r}")
            time.sleep(0.5)
    finally:
        p.kill()
        p.wait()


def save_bench(d, guest):
    """`maqet suspend` and `start` of a test guest whose RAM holds random
    data, against `dd conv=fsync` of as many bytes to the same file system,
    alternating, for each size in SAVE_MIB."""
    rows = {}
    for mib in SAVE_MIB:
        vm = f"bench-save{mib}-{os.getpid()}"
        y = os.path.join(d, f"{vm}.yaml")
        with open(y, "w") as f:
            f.write(f"name: {vm}\nbinary: {QEMU}\nmemory: {mib}M\nconsole: true\narguments:\n"
                    "  - accel: tcg\n  - display: none\n  - nodefaults\n"
                    f"  - kernel: {guest}/vmlinuz\n  - initrd: {guest}/initrd.gz\n"
                    "  - append: \"console=ttyS0 quiet\"\n")
        run("add", y)
        run("start", vm)
        end = time.monotonic() + 300
        while "maqet-test-guest: ready" not in run("console", vm, "--dump").stdout:
            if time.monotonic() > end:
                raise RuntimeError(f"{vm} did not boot")
            time.sleep(0.5)
        # Random data in RAM (the initramfs root is RAM), so the state is
        # not mostly zero pages, which QEMU writes as a flag each.
        fill = mib * 6 // 10
        guest_console(vm, f"dd if=/dev/urandom of=/fill bs=1M count={fill} 2>/dev/null", 7000 + mib)
        saves, wall, loads, dds, size = [], [], [], [], 0
        try:
            for _ in range(SAVE_RUNS):
                t0 = time.perf_counter()
                s = json.loads(run("suspend", vm, "--json").stdout)
                wall.append(time.perf_counter() - t0)
                saves.append(s["save_ms"] / 1000)
                size = s["size"]
                state_dir = os.path.dirname(s["path"])
                t0 = time.perf_counter()
                subprocess.run(["dd", "if=/dev/zero", f"of={os.path.join(state_dir, 'dd.out')}", "bs=1M",
                                f"count={max(1, size >> 20)}", "conv=fsync"], check=True, capture_output=True)
                dds.append(time.perf_counter() - t0)
                os.remove(os.path.join(state_dir, "dd.out"))
                t0 = time.perf_counter()
                run("start", vm)
                loads.append(time.perf_counter() - t0)
        finally:
            run("rm", "--force", "--delete-storage", vm, check=False)
        rows[mib] = {"state_bytes": size, "save_s": statistics.median(saves),
                     "suspend_wall_s": statistics.median(wall), "dd_s": statistics.median(dds),
                     "start_resume_s": statistics.median(loads)}
    return rows


def print_saves(saves):
    for mib, row in saves.items():
        n = row["state_bytes"] / (1 << 20)
        print(f"{mib:4d} MiB guest: state {n:6.1f} MiB; dd of as many bytes (conv=fsync): {ms(row['dd_s'])} "
              f"{n / row['dd_s']:7.1f} MiB/s")
        print(f"     save (pause → synced, recorded): {ms(row['save_s'])} {n / row['save_s']:7.1f} MiB/s   "
              f"ratio {row['save_s'] / row['dd_s']:5.2f}x of dd (target ≤ 1.50x); maqet suspend "
              f"{ms(row['suspend_wall_s'])}")
        print(f"     maqet start (resume, to running): {ms(row['start_resume_s'])} "
              f"{n / row['start_resume_s']:7.1f} MiB/s")


def start_bench(d):
    """Bare QEMU, the systemd floor and `maqet start` (alternating with the
    floor), the runner's RSS and `maqet qmp run`: medians."""
    vm = f"bench-{os.getpid()}"
    yaml = os.path.join(d, "vm.yaml")
    with open(yaml, "w") as f:
        f.write(f"name: {vm}\nbinary: {QEMU}\nmemory: 64M\narguments:\n"
                "  - accel: tcg\n  - display: none\n  - nodefaults\n")
    run("add", yaml)

    bare_qemu_once()  # warm the page cache for both
    bare = [bare_qemu_once() for _ in range(RUNS)]
    systemd_run_once(d, "warm")
    starts, rss, floor = [], [], []
    for i in range(RUNS):
        # Alternating, so a busy moment of the machine hits both alike.
        floor.append(systemd_run_once(d, i))
        starts.append(timed("start", vm))
        st = json.loads(run("status", vm, "--json").stdout)
        time.sleep(0.5)  # let the runner settle (watchdog, IPC) before RSS
        rss.append(rss_kib(st["runner_pid"]))
        run("stop", vm, "--force")
    run("start", vm)
    qmp = [timed("qmp", "run", vm, "query-status") for _ in range(RUNS * 3)]
    run("stop", vm, "--force")
    b, s, q, fl = (statistics.median(x) for x in (bare, starts, qmp, floor))
    return b, fl, s, statistics.median(rss), q


def print_start(b, fl, s, r, q):
    print(f"bare QEMU exec → query-status : {ms(b)}   (baseline)")
    print(f"systemd-run --user of it      : {ms(fl)}   ratio {fl / b:5.2f}x   (the systemd floor)")
    print(f"maqet start                   : {ms(s)}   ratio {s / b:5.2f}x of bare QEMU, "
          f"{s / fl:5.2f}x of the floor (target ≤ 1.05x)")
    print(f"runner RSS                    : {r / 1024:7.2f} MiB (target ≤ 4 MiB)")
    print(f"maqet qmp run … query-status  : {ms(q)}   (target ≤ 4 ms)")


def main():
    with tempfile.TemporaryDirectory(prefix="maqet-bench-") as d:
        if os.environ.get("MAQET_BENCH_ONLY") == "start":
            os.environ["MAQET_DATA_DIR"] = os.path.join(d, "data")
            b, fl, s, r, q = start_bench(d)
            print(f"runs per figure: {RUNS} (medians)")
            print_start(b, fl, s, r, q)
            print(json.dumps({"bare_qemu_s": b, "floor_s": fl, "start_s": s, "start_ratio": s / b,
                              "start_floor_ratio": s / fl, "runner_rss_kib": r, "qmp_s": q}))
            return 0
        remote = bench_remote.remote_bench(d, RUNS * 2) if bench_remote.available() else {}
        if os.environ.get("MAQET_BENCH_ONLY") == "remote":
            print(f"runs per figure: {RUNS * 2} (medians)")
            for line in bench_remote.rows(remote, ms):
                print(line)
            print(json.dumps({"remote": remote}))
            return 0
        guest = os.environ.get("MAQET_BENCH_GUEST")
        os.environ["MAQET_DATA_DIR"] = os.path.join(d, "data-save")
        saves = save_bench(d, guest) if guest else {}
        if os.environ.get("MAQET_BENCH_ONLY") == "save":
            print(f"runs per figure: {SAVE_RUNS} (medians)")
            print_saves(saves)
            print(json.dumps({"save": {str(k): v for k, v in saves.items()}}))
            return 0
        curl_s, pull_s, launch = image_bench(d)
        os.environ["MAQET_DATA_DIR"] = os.path.join(d, "data")
        b, fl, s, r, q = start_bench(d)

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

        os.environ["MAQET_DATA_DIR"] = os.path.join(d, "data-shares")
        shares = bench_shares.share_bench(d)
        net = bench_shares.net_bench(d)

    l = statistics.median(ls)
    print(f"runs per figure: {RUNS} (medians)")
    print_start(b, fl, s, r, q)
    print(f"maqet ls, 200 VMs defined     : {ms(l)}   (target ≤ 20 ms)")
    one = ls_running[1]
    for n in LS_RUNNING:
        t = ls_running[n]
        target = "   (target ≤ 20 ms and ≤ 2.00x)" if n == LS_RUNNING[-1] else ""
        print(f"maqet ls, {n:2d} VMs running     : {ms(t)}   ratio {t / one:5.2f}x vs 1 running{target}")
    mib = PULL_MIB
    print(f"curl -o, {mib} MiB from 127.0.0.1 : {ms(curl_s)}   {mib / curl_s:7.1f} MiB/s")
    print(f"maqet image pull, the same     : {ms(pull_s)}   {mib / pull_s:7.1f} MiB/s   "
          f"ratio {curl_s / pull_s:5.2f}x of curl (target ≥ 0.90x; includes verifying, fsync, qemu-img probe)")
    for label, t in (launch or {}).items():
        print(f"maqet launch → ssh ready, {label:16s}: {t:6.1f} s   (test guest, TCG)")
    for line in bench_shares.rows(shares, net):
        print(line)
    print_saves(saves)
    for line in bench_remote.rows(remote, ms):
        print(line)
    print(json.dumps({"bare_qemu_s": b, "floor_s": fl, "start_s": s, "start_ratio": s / b,
                      "start_floor_ratio": s / fl, "runner_rss_kib": r,
                      "qmp_s": q, "ls200_s": l,
                      "ls_running_s": {str(k): v for k, v in ls_running.items()},
                      "curl_s": curl_s, "pull_s": pull_s, "pull_ratio": curl_s / pull_s,
                      "launch_s": launch, "shares_mib_s": shares, "net_mib_s": net,
                      "save": {str(k): v for k, v in saves.items()},
                      "remote": remote}))


if __name__ == "__main__":
    sys.exit(main())
