#!/usr/bin/env bash
# A desktop-like `systemd --user` session for maqet's tests.
#
#   user-session.sh up       create/start it (root), or verify the caller's own (non-root)
#   user-session.sh down     stop sshd and both users' managers and units (journald stays)
#   user-session.sh env      print `export` lines for the session user's environment
#   user-session.sh status   short health report; exit 0 iff healthy
#
# As root this builds what PID 1 = systemd + logind would normally provide (DESIGN.md §8):
# a dedicated user, the sd_booted marker, one journald with persistent storage (so
# per-user journal files exist for `journalctl --user`), /run/user/UID, a delegated cgroup
# subtree for user@UID.service, and a `systemd --user` started inside it. The user bus
# comes from dbus-user-session's dbus.socket, socket-activated by that manager.
#
# Two users get such a session: the test user (maqet-test, uid 1990), as whom the tests
# run, and the "remote host" of the `maqet -H` tests (maqet-remote, uid 1991), which the
# test user reaches through a loopback sshd (sshd.sh, started last by `up`).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

MAQET_TEST_UID_WANTED=${MAQET_TEST_UID:-1990}
MAQET_REMOTE_UID_WANTED=${MAQET_REMOTE_UID:-1991}
SYSTEMD_BIN=/lib/systemd/systemd
JOURNALD_BIN=/lib/systemd/systemd-journald
CG_SYSTEMD=/sys/fs/cgroup/systemd # the name=systemd v1 hierarchy (hybrid layout)
CG_UNIFIED=/sys/fs/cgroup/unified # the cgroup2 hierarchy of the hybrid layout

UP_TIMEOUT=${MAQET_SESSION_TIMEOUT:-20}
JOURNALD_LOG=$MAQET_SESSION_STATE/journald.log
HEALTH_WHY=""

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# Makes USER the one the functions below act on: its identity (TUSER, TUID, ...; see
# session_identity) and its manager's pid file and log. The test user keeps the
# unsuffixed names, so a session started before the remote user existed is still found.
# Returns 1 if USER does not exist yet.
use_user() {
    local suffix=""
    [[ $1 == "$MAQET_TEST_USER" ]] || suffix=-$1
    PIDFILE=$MAQET_SESSION_STATE/user-manager$suffix.pid
    MGR_LOG=$MAQET_SESSION_STATE/user-manager$suffix.log
    WANTED_UID=$MAQET_TEST_UID_WANTED
    [[ $1 == "$MAQET_TEST_USER" ]] || WANTED_UID=$MAQET_REMOTE_UID_WANTED
    WANTED_USER=$1
    session_identity "$1"
}

# Runs "$@" as the session user (setpriv as root, directly otherwise).
in_session() {
    if is_root; then run_as_session_user "$@"; else "$@"; fi
}

# A pid is alive if it exists and is not a zombie (PID 1 here may not reap orphans).
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

# ---------------------------------------------------------------- journald

journald_pids() {
    local p
    # comm is truncated to 15 chars; confirm by executable.
    for p in $(pgrep -x systemd-journal || true); do
        [[ $(readlink "/proc/$p/exe" 2>/dev/null) == */systemd-journald ]] && alive "$p" && echo "$p"
    done
    return 0
}

# Journal files of an earlier journald still under /run/log/journal. Here /run is not a
# tmpfs but the root ext4, so after a flush journald refuses to delete them ("Attempted to
# remove disk file system under /run/log/journal ... we can't allow that"), reopens the
# leftover runtime file and keeps writing there instead of to /var: no user-UID.journal
# files, and `journalctl --user` shows nothing. So a journald we start must find none.
retire_runtime_journal() {
    local id run var f dest
    id=$(cat /etc/machine-id)
    run=/run/log/journal/$id
    var=/var/log/journal/$id
    [[ -d $run ]] || return 0
    install -d -m 2755 -o root -g systemd-journal "$var"
    for f in "$run"/*.journal "$run"/*.journal~; do
        [[ -e $f ]] || continue
        # Kept readable for `journalctl` as an archived (tilde) file of the system journal.
        dest="$var/system@runtime-$(date +%s%N).journal~"
        mv "$f" "$dest"
        chgrp systemd-journal "$dest"
        log "moved leftover runtime journal $f to $var"
    done
}

ensure_journald() {
    local -a pids
    # Persistent storage is what makes journald split user-UID.journal files; without
    # them `journalctl --user` (which reads only those) shows nothing.
    install -d -m 2755 -o root -g systemd-journal /var/log/journal
    mapfile -t pids < <(journald_pids)
    if ((${#pids[@]} > 1)); then
        log "warning: ${#pids[@]} journalds running (${pids[*]}); not starting another"
    elif ((${#pids[@]} == 0)); then
        retire_runtime_journal
        # The "flushed" flag (normally set by systemd-journal-flush.service) makes a
        # fresh journald write to /var from its first message, with no runtime journal.
        install -d -m 0755 /run/systemd/journal
        touch /run/systemd/journal/flushed
        # Detached (own session) so it outlives this script; fd 9 (our lock) closed.
        setsid -f "$JOURNALD_BIN" </dev/null >>"$JOURNALD_LOG" 2>&1 9>&-
        log "started systemd-journald"
    fi
    # Readiness probe (answers once journald listens) and, for a journald we did not
    # start that still has a runtime journal, the move to /var. Idempotent.
    local flushed=""
    for _ in $(seq 50); do
        timeout 5 journalctl --flush >/dev/null 2>&1 && flushed=1 && break
        sleep 0.1
    done
    [[ -n $flushed ]] || die "journald does not answer 'journalctl --flush' (log: $JOURNALD_LOG)"
    if [[ -n $(find /run/log/journal -name '*.journal' 2>/dev/null) ]]; then
        log "warning: journald still writes under /run/log/journal (see retire_runtime_journal);" \
            "'journalctl --user' will miss entries until it is restarted"
    fi
}

# ---------------------------------------------------------------- user, groups, /dev/kvm

# Creates the user chosen by use_user (WANTED_USER, uid WANTED_UID if free) with groups
# kvm and systemd-journal, and re-reads its identity.
ensure_user() {
    local user=$WANTED_USER
    getent group kvm >/dev/null || groupadd --system kvm
    if ! getent passwd "$user" >/dev/null; then
        local -a idopt=()
        # Fixed UID keeps paths (/run/user/1990) stable across machines, if it is free.
        if ! getent passwd "$WANTED_UID" >/dev/null && ! getent group "$WANTED_UID" >/dev/null; then
            idopt=(--uid "$WANTED_UID")
        fi
        useradd "${idopt[@]}" --user-group --create-home --home-dir "/home/$user" \
            --shell /bin/bash --groups kvm,systemd-journal "$user"
        log "created user $user"
    else
        local groups
        groups=" $(id -nG "$user") "
        if [[ $groups != *" kvm "* || $groups != *" systemd-journal "* ]]; then
            usermod -aG kvm,systemd-journal "$user"
        fi
    fi
    # useradd leaves the password "!" (locked). Without PAM, sshd refuses every login
    # to a locked account, keys included; "*" is just as unusable as a password but
    # not "locked", so the key logins of sshd.sh work.
    if [[ $(getent shadow "$user" | cut -d: -f2) == '!'* ]]; then
        usermod -p '*' "$user"
    fi
    session_identity "$user"
    install -d -m 0755 -o "$TUID" -g "$TGID" "$THOME"
    if [[ -c /dev/kvm ]]; then
        # What Debian's udev rule would do; /dev is devtmpfs, so redo it every boot.
        chgrp kvm /dev/kvm
        chmod 660 /dev/kvm
    fi
}

# ---------------------------------------------------------------- cgroups

# The hierarchies systemd tracks units in: name=systemd + cgroup2 on this hybrid
# layout, or just /sys/fs/cgroup on a pure cgroup2 machine.
cgroup_hierarchies() {
    if [[ $(stat -f -c %T /sys/fs/cgroup) == cgroup2fs ]]; then
        echo /sys/fs/cgroup
        return
    fi
    [[ -e $CG_SYSTEMD/cgroup.procs ]] && echo "$CG_SYSTEMD"
    [[ -e $CG_UNIFIED/cgroup.procs ]] && echo "$CG_UNIFIED"
    return 0
}

cg_subtree() { echo "user.slice/user-$TUID.slice/user@$TUID.service"; }

# What user@.service with Delegate=yes gets from PID 1: a subtree the user owns.
prepare_cgroups() {
    local h sub
    sub=$(cg_subtree)
    for h in $(cgroup_hierarchies); do
        mkdir -p "$h/$sub"
        chown -R "$TUID:$TGID" "$h/$sub"
    done
}

# ---------------------------------------------------------------- the user manager

manager_pid() {
    local pid
    pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" || return 1
    # Guard against pid reuse: must be systemd, running as the test user.
    [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == */systemd/systemd ]] || return 1
    [[ $(stat -c %u "/proc/$pid") == "$TUID" ]] || return 1
    echo "$pid"
}

# Healthy = the manager answers over its private socket and says running/degraded,
# and the user bus is up with systemd registered on it (what maqet talks to).
healthy() {
    local state
    if is_root; then
        local pid kvm_gid
        pid=$(manager_pid) || { HEALTH_WHY="no user manager process"; return 1; }
        kvm_gid=$(getent group kvm | cut -d: -f3)
        # A manager started before the user joined kvm would hand QEMU no /dev/kvm.
        if [[ -c /dev/kvm ]] && ! grep -qE "^Groups:.*\<$kvm_gid\>" "/proc/$pid/status"; then
            HEALTH_WHY="user manager $pid lacks group kvm"
            return 1
        fi
    fi
    state=$(in_session timeout 5 systemctl --user is-system-running 2>/dev/null) || true
    if [[ $state != running && $state != degraded ]]; then
        HEALTH_WHY="systemctl --user is-system-running: ${state:-no answer}"
        return 1
    fi
    if ! in_session busctl --user --timeout=5 call org.freedesktop.systemd1 /org/freedesktop/systemd1 \
        org.freedesktop.systemd1.Manager GetUnit s default.target >/dev/null 2>&1; then
        HEALTH_WHY="user bus: busctl --user call org.freedesktop.systemd1 GetUnit failed"
        return 1
    fi
    HEALTH_WHY="$state"
}

diagnose() {
    local pid
    log "diagnosis: $HEALTH_WHY"
    if is_root; then
        pid=$(cat "$PIDFILE" 2>/dev/null || true)
        log "manager pid file: ${pid:-none}; alive: $(alive "${pid:-0}" && echo yes || echo no)"
        [[ -n $pid && -r /proc/$pid/cgroup ]] && log "manager cgroups: $(tr '\n' ' ' <"/proc/$pid/cgroup")"
        log "journald pids: $(journald_pids | tr '\n' ' ')"
        log "last lines of $MGR_LOG:"
        tail -n 20 "$MGR_LOG" >&2 2>/dev/null || true
        if [[ -n $pid ]]; then
            log "journal of the manager (_PID=$pid):"
            journalctl --no-pager -q -n 30 "_PID=$pid" >&2 2>/dev/null || true
        fi
    fi
    in_session timeout 5 systemctl --user --no-pager --failed >&2 2>/dev/null || true
}

start_manager() {
    local sub h
    local -a procs=() envv
    sub=$(cg_subtree)
    install -d -m 0700 -o "$TUID" -g "$TGID" "$TRUNTIME"
    chown "$TUID:$TGID" "$TRUNTIME"
    chmod 0700 "$TRUNTIME"
    prepare_cgroups
    for h in $(cgroup_hierarchies); do procs+=("$h/$sub/cgroup.procs"); done
    mapfile -t envv < <(session_env_lines)
    printf '=== %s starting systemd --user for %s\n' "$(date -Is)" "$TUSER" >>"$MGR_LOG"
    # setsid -f: detached, own session, survives this script. The inner shell (whose
    # pid systemd will keep, via exec) joins the delegated cgroups while still root,
    # then drops to the user. The manager logs to the journal like a real user@.service
    # does; anything before the journal is reachable lands in $MGR_LOG.
    # shellcheck disable=SC2016 # expanded by the inner sh
    CG_PROCS="${procs[*]}" PIDFILE=$PIDFILE setsid -f sh -c '
        echo $$ >"$PIDFILE"
        for f in $CG_PROCS; do echo $$ >"$f" || exit 1; done
        exec "$@"' sh \
        setpriv --reuid="$TUID" --regid="$TGID" --init-groups -- \
        env -i "${envv[@]}" SHELL=/bin/bash LANG=C.UTF-8 \
        "$SYSTEMD_BIN" --user --log-target=journal-or-kmsg \
        </dev/null >>"$MGR_LOG" 2>&1 9>&-
}

# Kills whatever is left of a session (any process in the delegated subtree or owned by
# the dedicated test user, all started by this harness), removes the subtree and wipes
# /run/user/UID as a logout would, so the next `up` starts from nothing.
cleanup_session() {
    local sub h pid i
    local -a pids=()
    sub=$(cg_subtree)
    for h in $(cgroup_hierarchies); do
        [[ -d $h/$sub ]] || continue
        mapfile -t -O "${#pids[@]}" pids < <(find "$h/$sub" -name cgroup.procs -exec cat {} +)
    done
    mapfile -t -O "${#pids[@]}" pids < <(ps -u "$TUID" -o pid= | tr -d ' ')
    mapfile -t pids < <(printf '%s\n' "${pids[@]}" | grep -E '^[0-9]+$' | sort -un || true)
    # Zombies are dead already (PID 1 here reaps orphans only lazily).
    for i in "${!pids[@]}"; do alive "${pids[$i]}" || unset "pids[$i]"; done
    pids=("${pids[@]}")
    if ((${#pids[@]})); then
        local list
        list=$(IFS=,; echo "${pids[*]}")
        log "leftover session processes: $(ps -o pid=,comm= -p "$list" | tr -s ' \n' ' ')"
        kill -TERM "${pids[@]}" 2>/dev/null || true
        local any
        for _ in $(seq 20); do
            any=0
            for pid in "${pids[@]}"; do alive "$pid" && any=1; done
            ((any)) || break
            sleep 0.1
        done
        kill -KILL "${pids[@]}" 2>/dev/null || true
    fi
    for h in $(cgroup_hierarchies); do
        [[ -d $h/$sub ]] || continue
        # Depth first; a cgroup dir can only go once empty.
        find "$h/$sub" -depth -type d -exec rmdir {} + 2>/dev/null ||
            log "warning: could not remove all of $h/$sub"
        rmdir "$h/${sub%/*}" 2>/dev/null || true # user-UID.slice, if now empty
    done
    rm -rf "$TRUNTIME"
    rm -f "$PIDFILE"
}

stop_manager() {
    local pid t0
    pid=$(manager_pid) || return 0
    t0=$(now_ms)
    # `exit` = start exit.target: stops every unit in order, then the manager exits.
    if ! in_session timeout 5 systemctl --user --no-block exit >/dev/null 2>&1; then
        kill -TERM "$pid" 2>/dev/null || true # same thing for a user manager
    fi
    for _ in $(seq 200); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        log "user manager $pid did not exit within 20 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    else
        log "user manager $pid exited after $(($(now_ms) - t0)) ms"
    fi
}

lock_state() {
    install -d -m 0755 "$MAQET_SESSION_STATE"
    exec 9>"$MAQET_SESSION_STATE/lock"
    flock -w 60 9 || die "another user-session.sh holds $MAQET_SESSION_STATE/lock"
}

# ---------------------------------------------------------------- commands

cmd_up() {
    local t0
    t0=$(now_ms)
    if ! is_root; then
        session_identity
        healthy || { diagnose; die "no working 'systemctl --user' for $TUSER; run 'up' as root to create the test session"; }
        log "using the existing session of $TUSER ($HEALTH_WHY)"
        return 0
    fi
    lock_state
    use_user "$MAQET_TEST_USER" || true
    ensure_user
    # The full-disk tests' tiny filesystem (tests/state_faults.rs).
    bash "$here/small-fs.sh" "$TUID" "$TGID"
    # sd_booted() marker: without it systemd --user and sd_notify users refuse to act.
    mkdir -p /run/systemd/system
    ensure_journald
    up_manager "$t0"
    use_user "$MAQET_REMOTE_USER" || true
    ensure_user
    up_manager "$(now_ms)"
    # Last: its health check logs in as the remote user and asks that user's manager.
    bash "$here/sshd.sh" up
}

# Brings up the manager of the user chosen by use_user: a no-op if it runs and is
# healthy, else a restart from nothing. T0 (ms) is when the caller started, for the log.
up_manager() {
    local t0=$1 pid
    if manager_pid >/dev/null; then
        # Warm path; also waits out a manager that is still starting.
        for _ in $(seq $((UP_TIMEOUT * 10))); do
            if healthy; then
                log "$TUSER: already up ($HEALTH_WHY; checked in $(($(now_ms) - t0)) ms)"
                return 0
            fi
            manager_pid >/dev/null || break
            sleep 0.1
        done
        log "$TUSER: existing session unhealthy ($HEALTH_WHY); restarting it"
        stop_manager
    fi
    cleanup_session
    start_manager
    for _ in $(seq $((UP_TIMEOUT * 10))); do
        if healthy; then
            pid=$(manager_pid)
            log "up: user $TUSER uid $TUID, manager pid $pid, $HEALTH_WHY, in $(($(now_ms) - t0)) ms"
            return 0
        fi
        # The pid file is written before exec: a dead pid means startup failed.
        if [[ -s $PIDFILE ]] && ! alive "$(cat "$PIDFILE")"; then
            HEALTH_WHY="systemd --user exited during startup ($HEALTH_WHY)"
            break
        fi
        sleep 0.1
    done
    diagnose
    die "user session of $TUSER did not come up (limit ${UP_TIMEOUT} s; see above)"
}

cmd_down() {
    local user
    if ! is_root; then
        log "not root: leaving your own user manager alone"
        return 0
    fi
    lock_state
    # sshd first: its sessions are processes of the users whose sessions go next.
    bash "$here/sshd.sh" down
    for user in "$MAQET_REMOTE_USER" "$MAQET_TEST_USER"; do
        use_user "$user" || { log "no user $user; nothing to stop"; continue; }
        stop_manager
        cleanup_session
    done
    log "down (journald left running: $(journald_pids | tr '\n' ' '))"
}

cmd_env() {
    session_identity || die "no user $MAQET_TEST_USER yet; run '$0 up' first"
    local line
    while IFS= read -r line; do
        printf 'export %s=%q\n' "${line%%=*}" "${line#*=}"
    done < <(session_env_lines; remote_env_lines)
}

# The health report of the user chosen by use_user; returns 1 if unhealthy.
user_status() {
    local pid
    echo "user: $TUSER uid=$TUID groups=$(id -nG "$TUSER" | tr ' ' ',')"
    echo "XDG_RUNTIME_DIR: $(stat -c '%A %U' "$TRUNTIME" 2>/dev/null || echo missing) $TRUNTIME"
    if is_root; then
        if pid=$(manager_pid); then
            echo "manager: pid $pid, cgroup $(grep -m1 name=systemd "/proc/$pid/cgroup" | cut -d: -f3)"
        else
            echo "manager: not running"
        fi
    fi
    if healthy; then
        echo "state: $HEALTH_WHY; user bus ok"
    else
        echo "unhealthy: $HEALTH_WHY"
        return 1
    fi
    if [[ $HEALTH_WHY == degraded ]]; then
        in_session timeout 5 systemctl --user --no-pager --no-legend --failed 2>/dev/null | sed 's/^/failed: /'
    fi
    return 0
}

cmd_status() {
    local rc=0
    use_user "$MAQET_TEST_USER" || { echo "user $MAQET_TEST_USER: missing"; return 1; }
    user_status || rc=1
    if is_root; then
        echo "journald: $(journald_pids | tr '\n' ' ')"
        if use_user "$MAQET_REMOTE_USER"; then
            user_status || rc=1
        else
            echo "user $MAQET_REMOTE_USER: missing"
            rc=1
        fi
        bash "$here/sshd.sh" status || rc=1
    fi
    [[ -e /dev/kvm ]] && echo "kvm: $(stat -c '%A %U:%G' /dev/kvm)"
    return "$rc"
}

case ${1:-} in
    up) cmd_up ;;
    down) cmd_down ;;
    env) cmd_env ;;
    status) cmd_status ;;
    *)
        echo "usage: $0 up|down|env|status" >&2
        exit 2
        ;;
esac
