"""`maqet -H` timings for `make bench` (tests/bench.py): `maqet -H HOST ls`
and `maqet -H HOST qmp run VM query-status` with a warm ssh ControlMaster,
against `ssh HOST true` over a warm master of its own in the same run (the
floor: one round trip through an open ssh connection). The host is the
test user itself by the name localhost, through the loopback sshd of
tests/session/sshd.sh (MAQET_TEST_SSH_PORT)."""

import getpass
import os
import shutil
import statistics
import subprocess
import time

QEMU = "/usr/bin/qemu-system-x86_64"


def available():
    return bool(os.environ.get("MAQET_TEST_SSH_PORT"))


def _timed(argv, env):
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, env=env)
    return time.perf_counter() - t0


def remote_bench(d, runs):
    port = os.environ["MAQET_TEST_SSH_PORT"]
    user = getpass.getuser()
    maqet = shutil.which("maqet")
    cfg = os.path.join(d, "remote-config")
    os.makedirs(os.path.join(cfg, "maqet"), exist_ok=True)
    data = os.path.join(d, "data-remote")
    with open(os.path.join(cfg, "maqet", "hosts.yaml"), "w") as f:
        f.write(f"bench:\n  ssh: {user}@localhost\n  port: {port}\n  maqet: {maqet}\n"
                f"  data_dir: {data}\n")
    # A runtime directory of its own: maqet's master connection is ended
    # with the run (the local side of -H needs it for nothing else).
    run_dir = os.path.join(d, "remote-run")
    os.makedirs(run_dir, mode=0o700, exist_ok=True)
    env = dict(os.environ, XDG_CONFIG_HOME=cfg, XDG_RUNTIME_DIR=run_dir)
    env.pop("MAQET_HOST", None)
    vm = f"rbench-{os.getpid()}"
    yaml = os.path.join(d, "rvm.yaml")
    with open(yaml, "w") as f:
        f.write(f"name: {vm}\nbinary: {QEMU}\nmemory: 64M\narguments:\n"
                "  - accel: tcg\n  - display: none\n  - nodefaults\n")
    m = ["maqet", "-H", "bench"]
    master = os.path.join(os.environ["XDG_RUNTIME_DIR"], f"maqet-bench-ssh-{os.getpid()}")
    floor_argv = ["ssh", "-o", "ControlMaster=auto", "-o", f"ControlPath={master}",
                  "-o", "ControlPersist=60", "-o", "BatchMode=yes", "-p", port,
                  "--", f"{user}@localhost", "true"]
    subprocess.run(m + ["add", yaml], check=True, capture_output=True, env=env)
    subprocess.run(m + ["start", vm], check=True, capture_output=True, env=env)
    try:
        # Warm both masters (and the page cache of both maqets).
        for _ in range(3):
            _timed(floor_argv, env)
            _timed(m + ["ls"], env)
        floor, ls, qmp = [], [], []
        for _ in range(runs):
            # Alternating, so a busy moment of the machine hits all alike.
            floor.append(_timed(floor_argv, env))
            ls.append(_timed(m + ["ls"], env))
            qmp.append(_timed(m + ["qmp", "run", vm, "query-status"], env))
    finally:
        subprocess.run(m + ["rm", "--force", vm], capture_output=True, env=env)
        masters = [master]
        ssh_dir = os.path.join(run_dir, "maqet", "ssh")
        if os.path.isdir(ssh_dir):
            masters += [os.path.join(ssh_dir, n) for n in os.listdir(ssh_dir)]
        for sock in masters:
            subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "--", "x"],
                           capture_output=True)
    return {"ssh_true_s": statistics.median(floor), "ls_s": statistics.median(ls),
            "qmp_s": statistics.median(qmp)}


def rows(r, ms):
    if not r:
        return ["maqet -H: skipped (no test sshd: MAQET_TEST_SSH_PORT unset)"]
    f = r["ssh_true_s"]
    return [
        f"ssh localhost true, warm master : {ms(f)}   (the floor)",
        f"maqet -H localhost ls           : {ms(r['ls_s'])}   ratio {r['ls_s'] / f:5.2f}x of the floor (target ≤ 1.50x)",
        f"maqet -H … qmp run query-status : {ms(r['qmp_s'])}   ratio {r['qmp_s'] / f:5.2f}x of the floor (target ≤ 1.50x)",
    ]
