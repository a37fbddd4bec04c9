#!/usr/bin/env bash
# sshd.sh up|down|status  — (root) the loopback sshd of the remote-host tests.
#
# `maqet -H [USER@]HOST[:PORT]` runs every command on another machine through the system's
# ssh. Its tests need a real sshd and a real "other machine"; the stand-in is a second user
# (maqet-remote, uid 1991) with a user manager of its own (user-session.sh), reached as
# maqet-remote@127.0.0.1:PORT through this sshd:
#   - its own config, ed25519 host key and pid file in $MAQET_TEST_SSHD_DIR (root-owned,
#     default /var/lib/maqet-test-sshd); the log is $MAQET_SESSION_STATE/sshd.log;
#   - listens on 127.0.0.1 only; public keys only; only the two test users may log in;
#   - the test user's key pair ~/.ssh/id_ed25519 (no passphrase) is authorised for
#     maqet-remote and for the test user itself (a test may use maqet-test@localhost);
#   - the test user's ~/.ssh/known_hosts holds this sshd's host key for [127.0.0.1]:PORT
#     and [localhost]:PORT, so tests connect with host key checking on, as a user would;
#   - $MAQET_TEST_SSHD_DIR/remote.env records MAQET_TEST_SSH_HOST, MAQET_TEST_SSH_PORT and
#     MAQET_TEST_REMOTE_USER (NAME=VALUE lines) for tests/run.sh and the tests.
# Port: $MAQET_TEST_SSH_PORT if set; else the running sshd's; else 2299 if free, else any
# free one. `up` leaves a running sshd with the same config alone once a login answers;
# `down` stops it. Called by user-session.sh up/down/status, under its lock, after both
# users' managers are up (the health check asks the remote user's manager over ssh).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

SSHD_BIN=/usr/sbin/sshd
DIR=$MAQET_TEST_SSHD_DIR
CONFIG=$DIR/sshd_config
HOST_KEY=$DIR/ssh_host_ed25519_key
SSHD_PID=$DIR/sshd.pid
SSHD_LOG=$MAQET_SESSION_STATE/sshd.log
# Not 2222: the original tool's example 2 forwards that port (tests/storage.rs).
DEFAULT_PORT=2299
UP_TIMEOUT=${MAQET_SESSION_TIMEOUT:-20}
HEALTH_WHY=""

is_root || die "sshd.sh: run as root"

# A pid is alive if it exists and is not a zombie (PID 1 here may not reap orphans).
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

# The pid of our listening sshd, if it runs: checked by executable and by the config
# file on its command line, so a reused pid or the machine's own sshd never counts.
sshd_pid() {
    local pid
    pid=$(cat "$SSHD_PID" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" || return 1
    [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == "$SSHD_BIN" ]] || return 1
    # sshd retitles itself ("sshd: /usr/sbin/sshd -f CONFIG ... [listener] ..."): one string.
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- " -f $CONFIG " || return 1
    echo "$pid"
}

# Sets U_UID/U_GID/U_HOME of USER ($1).
identity_of() {
    local ent
    ent=$(getent passwd "$1") || die "no user $1; run user-session.sh up"
    IFS=: read -r _ _ U_UID U_GID _ U_HOME _ <<<"$ent"
}

# Runs "$@" as USER ($1) with a minimal environment. Everything written into the users'
# homes is written by them, so ownership is right and root follows no link planted there.
as_user() {
    local user=$1
    shift
    identity_of "$user"
    setpriv --reuid="$U_UID" --regid="$U_GID" --init-groups -- \
        env -i HOME="$U_HOME" USER="$user" LOGNAME="$user" PATH="$USER_PATH" "$@"
}

port_free() {
    # SO_REUSEADDR as sshd sets it: a port with connections in TIME_WAIT is still usable.
    python3 -c '
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null
}

choose_port() {
    local last
    if [[ -n ${MAQET_TEST_SSH_PORT:-} ]]; then
        [[ $MAQET_TEST_SSH_PORT =~ ^[0-9]+$ ]] || die "MAQET_TEST_SSH_PORT=$MAQET_TEST_SSH_PORT is not a port"
        echo "$MAQET_TEST_SSH_PORT"
        return
    fi
    last=$(sed -n 's/^Port //p' "$CONFIG" 2>/dev/null || true)
    if [[ -n $last ]] && sshd_pid >/dev/null; then
        echo "$last"
        return
    fi
    if port_free "$DEFAULT_PORT"; then
        echo "$DEFAULT_PORT"
        return
    fi
    python3 -c '
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# The config for PORT on stdout.
render_config() {
    local port=$1 user uid
    cat <<EOF
# Written by tests/session/sshd.sh: the loopback sshd of maqet's remote-host tests.
Port $port
ListenAddress 127.0.0.1
HostKey $HOST_KEY
PidFile $SSHD_PID
# No PAM: PAM's session stack (pam_systemd) wants logind, which this machine lacks. The
# environment pam_systemd would give a login comes from SetEnv below instead.
UsePAM no
PubkeyAuthentication yes
AuthenticationMethods publickey
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AllowUsers $MAQET_REMOTE_USER $MAQET_TEST_USER
AuthorizedKeysFile .ssh/authorized_keys
PermitUserEnvironment no
X11Forwarding no
PrintMotd no
Subsystem sftp /usr/lib/openssh/sftp-server
LogLevel VERBOSE
# Tests in parallel on two busy cores may hold more than the default 10 unauthenticated
# connections at once; past that sshd drops new ones at random.
MaxStartups 100
EOF
    # OpenSSH 9.8+ penalises a source address after failed logins; every test comes from
    # 127.0.0.1, so tests of refused logins would lock the others out.
    if "$SSHD_BIN" -t -f /dev/null -o PerSourcePenalties=no -o HostKey="$HOST_KEY" 2>/dev/null; then
        echo "PerSourcePenalties no"
    fi
    # What pam_systemd sets for a login on a systemd machine, so `systemctl --user` and
    # maqet in a non-interactive `ssh HOST CMD` reach the user's manager and bus. SetEnv in
    # this root-owned file rather than PermitUserEnvironment + ~/.ssh/environment: the user
    # cannot change it, and sshd keeps refusing user-chosen variables (LD_PRELOAD, ...).
    for user in "$MAQET_REMOTE_USER" "$MAQET_TEST_USER"; do
        uid=$(id -u "$user")
        printf 'Match User %s\n    SetEnv XDG_RUNTIME_DIR=/run/user/%s DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/%s/bus\n' \
            "$user" "$uid" "$uid"
    done
}

# The test user's key pair, authorised for both users; the host key; known_hosts.
ensure_keys() {
    local port=$1 pub hostpub user line home want=0
    install -d -m 0755 -o root -g root "$DIR"
    if [[ ! -s $HOST_KEY ]]; then
        rm -f "$HOST_KEY" "$HOST_KEY.pub"
        ssh-keygen -q -t ed25519 -N '' -C "maqet-test-sshd" -f "$HOST_KEY"
        log "generated the test sshd's host key $HOST_KEY"
    fi
    chmod 0600 "$HOST_KEY"
    # shellcheck disable=SC2016 # expanded by the user's sh
    as_user "$MAQET_TEST_USER" sh -c '
        set -e
        umask 077
        mkdir -p "$HOME/.ssh"
        [ -s "$HOME/.ssh/id_ed25519" ] ||
            ssh-keygen -q -t ed25519 -N "" -C "$USER@maqet-tests" -f "$HOME/.ssh/id_ed25519"'
    identity_of "$MAQET_TEST_USER"
    home=$U_HOME
    pub=$(cat "$home/.ssh/id_ed25519.pub")
    for user in "$MAQET_REMOTE_USER" "$MAQET_TEST_USER"; do
        # shellcheck disable=SC2016 # expanded by the user's sh
        as_user "$user" sh -c '
            set -e
            umask 077
            mkdir -p "$HOME/.ssh"
            chmod 0700 "$HOME/.ssh"
            f=$HOME/.ssh/authorized_keys
            grep -qxF "$1" "$f" 2>/dev/null || printf "%s\n" "$1" >>"$f"
            chmod 0600 "$f"' sh "$pub"
    done
    # known_hosts: exactly our key for both names of this sshd; an old entry for them (a
    # host key made again after `rm -r $DIR`) goes, and so do entries of our key for other
    # ports (an earlier run's); other entries stay.
    hostpub=$(cut -d' ' -f1,2 "$HOST_KEY.pub")
    local -a lines=("[127.0.0.1]:$port $hostpub" "[localhost]:$port $hostpub")
    for line in "${lines[@]}"; do
        grep -qxF "$line" "$home/.ssh/known_hosts" 2>/dev/null || want=1
    done
    if ((want)); then
        # shellcheck disable=SC2016 # expanded by the user's sh
        as_user "$MAQET_TEST_USER" sh -c '
            set -e
            umask 077
            f=$HOME/.ssh/known_hosts
            port=$1
            key=$2
            shift 2
            if [ -e "$f" ]; then
                ssh-keygen -q -R "[127.0.0.1]:$port" -f "$f" >/dev/null 2>&1 || true
                ssh-keygen -q -R "[localhost]:$port" -f "$f" >/dev/null 2>&1 || true
                rm -f "$f.old"
                grep -vF -- "$key" "$f" >"$f.new" || true
                mv "$f.new" "$f"
            fi
            printf "%s\n" "$@" >>"$f"' sh "$port" "$hostpub" "${lines[@]}"
        log "recorded the test sshd's host key in ~$MAQET_TEST_USER/.ssh/known_hosts"
    fi
}

write_env_file() {
    local port=$1
    printf '%s\n' "MAQET_TEST_SSH_HOST=127.0.0.1" "MAQET_TEST_SSH_PORT=$port" \
        "MAQET_TEST_REMOTE_USER=$MAQET_REMOTE_USER" >"$REMOTE_ENV_FILE.new"
    chmod 0644 "$REMOTE_ENV_FILE.new"
    mv "$REMOTE_ENV_FILE.new" "$REMOTE_ENV_FILE"
}

# One login per user as the test user would make it (host key checked, key auth,
# no prompt), each asking that user's own manager: the whole path the tests rely on.
healthy() {
    local port=$1 dest state
    for dest in "$MAQET_REMOTE_USER@127.0.0.1" "$MAQET_TEST_USER@localhost"; do
        state=$(as_user "$MAQET_TEST_USER" timeout 10 ssh -p "$port" -o BatchMode=yes \
            -o StrictHostKeyChecking=yes -o ConnectTimeout=5 "$dest" \
            systemctl --user is-system-running 2>&1) || true
        if [[ $state != running && $state != degraded ]]; then
            HEALTH_WHY="ssh -p $port $dest systemctl --user is-system-running: ${state:-no answer}"
            return 1
        fi
    done
    HEALTH_WHY="logins as $MAQET_REMOTE_USER and $MAQET_TEST_USER reach their managers"
}

stop_sshd() {
    local pid
    pid=$(sshd_pid) || return 0
    kill -TERM "$pid"
    for _ in $(seq 50); do
        alive "$pid" || break
        sleep 0.1
    done
    alive "$pid" && kill -KILL "$pid"
    rm -f "$SSHD_PID"
    log "stopped the test sshd (pid $pid)"
}

start_sshd() {
    # A login is a dozen lines at LogLevel VERBOSE: start afresh past 64 MiB.
    if [[ $(stat -c %s "$SSHD_LOG" 2>/dev/null || echo 0) -gt $((64 << 20)) ]]; then
        mv "$SSHD_LOG" "$SSHD_LOG.old"
    fi
    "$SSHD_BIN" -t -f "$CONFIG" 2>>"$SSHD_LOG" || die "sshd rejects $CONFIG (see $SSHD_LOG)"
    printf '=== %s starting sshd -f %s\n' "$(date -Is)" "$CONFIG" >>"$SSHD_LOG"
    # sshd daemonises itself (own session, outlives this script) and writes its pid file
    # once it listens; -E keeps its log in a file, as there is no syslog here. fd 9 is the
    # session lock of user-session.sh, not to be held by the daemon.
    "$SSHD_BIN" -f "$CONFIG" -E "$SSHD_LOG" </dev/null >>"$SSHD_LOG" 2>&1 9>&-
}

cmd_up() {
    local port t0 pid
    t0=$(date +%s%N)
    install -d -m 0755 "$MAQET_SESSION_STATE"
    # Privilege separation directory (also for `sshd -t`); on a systemd machine
    # ssh.service makes it.
    install -d -m 0755 -o root -g root /run/sshd
    port=$(choose_port)
    ensure_keys "$port"
    render_config "$port" >"$CONFIG.new"
    if pid=$(sshd_pid) && cmp -s "$CONFIG.new" "$CONFIG"; then
        rm -f "$CONFIG.new"
        write_env_file "$port"
        if healthy "$port"; then
            log "sshd: already up (pid $pid, 127.0.0.1:$port; checked in $((($(date +%s%N) - t0) / 1000000)) ms)"
            return 0
        fi
        log "sshd: running but unhealthy ($HEALTH_WHY); restarting it"
    fi
    stop_sshd
    mv "$CONFIG.new" "$CONFIG"
    chmod 0644 "$CONFIG"
    write_env_file "$port"
    start_sshd
    for _ in $(seq $((UP_TIMEOUT * 10))); do
        if pid=$(sshd_pid) && healthy "$port"; then
            log "sshd: up, pid $pid, 127.0.0.1:$port, in $((($(date +%s%N) - t0) / 1000000)) ms"
            return 0
        fi
        sleep 0.1
    done
    log "last lines of $SSHD_LOG:"
    tail -n 20 "$SSHD_LOG" >&2 || true
    die "sshd did not come up (limit ${UP_TIMEOUT} s): ${HEALTH_WHY:-no listening sshd}"
}

cmd_down() {
    stop_sshd
    rm -f "$REMOTE_ENV_FILE"
}

cmd_status() {
    local pid port
    port=$(sed -n 's/^Port //p' "$CONFIG" 2>/dev/null || true)
    if ! pid=$(sshd_pid); then
        echo "sshd: not running"
        return 1
    fi
    if healthy "$port"; then
        echo "sshd: pid $pid, 127.0.0.1:$port; $HEALTH_WHY"
    else
        echo "sshd: pid $pid, 127.0.0.1:$port; unhealthy: $HEALTH_WHY"
        return 1
    fi
}

case ${1:-} in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *)
        echo "usage: $0 up|down|status" >&2
        exit 2
        ;;
esac
