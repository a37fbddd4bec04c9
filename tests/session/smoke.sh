#!/usr/bin/env bash
# smoke.sh — checks that the test session can do what maqet needs (run as root, or
# as a desktop user): brings the session up, creates a socket + notify-service pair
# with the exact StartTransientUnit call of DESIGN.md §2 (a python stand-in for
# maqet-runner), and checks status, socket modes, the journal, teardown and /dev/kvm.
# Exit 0 iff every check passed.
# shellcheck disable=SC2016 # single-quoted $VARS are expanded by the session user's sh
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
U=$here/as-user.sh
VM=smoke$$ # unique, so a leftover from an aborted run cannot collide
fails=0

ok() { echo "ok   - $*"; }
bad() {
    echo "FAIL - $*"
    fails=$((fails + 1))
}
check() { # check DESCRIPTION CMD...
    local what=$1
    shift
    if "$@"; then ok "$what"; else bad "$what"; fi
}
u() { "$U" "$@"; }

"$here/user-session.sh" up

# The stand-in: READY=1 + STATUS= over $NOTIFY_SOCKET (a datagram), watchdog pings,
# one line on stderr so the journal has something of its own to show.
standin=$(u sh -c 'echo "$HOME/maqet-smoke-stand-in.py"')
u sh -c 'cat >"$1"' sh "$standin" <<'EOF'
import os, socket, sys, time
print(f"stand-in: LISTEN_FDS={os.environ.get('LISTEN_FDS')} pid={os.getpid()}", file=sys.stderr, flush=True)
addr = os.environ["NOTIFY_SOCKET"]
addr = "\0" + addr[1:] if addr.startswith("@") else addr
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"READY=1\nSTATUS=serving", addr)
while True:
    time.sleep(2)
    s.sendto(b"WATCHDOG=1", addr)
EOF

rt=$(u sh -c 'echo "$XDG_RUNTIME_DIR"')
sock=$rt/maqet/vm/$VM.sock
svc=maqet-vm@$VM.service
u systemctl --user reset-failed "maqet-vm@$VM.*" 2>/dev/null || true

t0=$(date +%s%N)
check "StartTransientUnit (socket + aux service in one job)" \
    u busctl --user call org.freedesktop.systemd1 /org/freedesktop/systemd1 \
    org.freedesktop.systemd1.Manager StartTransientUnit 'ssa(sv)a(sa(sv))' \
    "maqet-vm@$VM.socket" fail \
    5 Listen 'a(ss)' 1 Stream "$sock" SocketMode u 384 DirectoryMode u 448 \
    RemoveOnStop b true BindsTo as 1 "$svc" \
    1 "$svc" 6 Type s notify ExecStart 'a(sasb)' 1 /usr/bin/python3 2 python3 "$standin" false \
    NotifyAccess s main KillMode s mixed WatchdogUSec t 10000000 Slice s maqet.slice

# Type=notify: active only after READY=1; poll briefly instead of a fixed sleep.
for _ in $(seq 50); do
    [[ $(u systemctl --user is-active "$svc" 2>/dev/null) == active ]] && break
    sleep 0.1
done
echo "     service active after $((($(date +%s%N) - t0) / 1000000)) ms"
check "service is active" test "$(u systemctl --user is-active "$svc")" = active
check "StatusText is \"serving\"" \
    test "$(u systemctl --user show -P StatusText "$svc")" = serving
check "service runs in maqet.slice" \
    test "$(u systemctl --user show -P Slice "$svc")" = maqet.slice
echo "     socket unit slice: $(u systemctl --user show -P Slice "maqet-vm@$VM.socket")"
check "socket file is 0600" test "$(u stat -c %a "$sock")" = 600
check "its directory is 0700" test "$(u stat -c %a "${sock%/*}")" = 700
# The journal may lag the service by a few ms: poll.
journal_has_standin() {
    for _ in $(seq 30); do
        u journalctl --user -u "$svc" -q --no-pager 2>/dev/null | grep -q 'stand-in: LISTEN_FDS=1' && return 0
        sleep 0.1
    done
    return 1
}
check "journalctl --user -u shows the stand-in's stderr" journal_has_standin
u systemctl --user status --no-pager "$svc" | sed 's/^/     | /' || true

check "systemctl --user stop" u systemctl --user stop "$svc"
check "socket unit stopped with it (BindsTo)" \
    test "$(u systemctl --user is-active "maqet-vm@$VM.socket" || true)" = inactive
check "socket file removed" test ! -e "$sock"
u rm -f "$standin"

if [[ -e /dev/kvm ]]; then
    echo "     $(ls -l /dev/kvm)"
    check "session user can open /dev/kvm read-write" u sh -c 'exec 3<>/dev/kvm'
fi

if ((fails)); then
    echo "smoke: $fails check(s) failed"
    exit 1
fi
echo "smoke: all checks passed"
