# shellcheck shell=bash
# Shared settings and helpers for tests/session/*.sh. Sourced, never executed.
#
# The test session is a dedicated unprivileged user with its own `systemd --user`
# manager, user D-Bus and per-user journal, set up by user-session.sh on machines
# whose PID 1 is not systemd (see DESIGN.md §8). On a machine where the caller is
# already an ordinary user with a working `systemctl --user`, that session is used.

MAQET_TEST_USER=${MAQET_TEST_USER:-maqet-test}
# The "remote host" of the `maqet -H` tests: a second user with a session of its own,
# reached over the loopback sshd of sshd.sh (root setup only).
MAQET_REMOTE_USER=${MAQET_REMOTE_USER:-maqet-remote}
# Root-owned state of the harness itself (logs, pid file, lock): /var/tmp survives
# `down` (which wipes /run/user/UID like a logout does) so the logs stay readable.
MAQET_SESSION_STATE=${MAQET_SESSION_STATE:-/var/tmp/maqet-session}
# The loopback sshd of the remote-host tests (sshd.sh): config, host key, pid file, and
# remote.env, the NAME=VALUE lines that tell the tests how to reach the remote user.
MAQET_TEST_SSHD_DIR=${MAQET_TEST_SSHD_DIR:-/var/lib/maqet-test-sshd}
REMOTE_ENV_FILE=$MAQET_TEST_SSHD_DIR/remote.env
USER_PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin

log() { printf '%s\n' "session: $*" >&2; }
die() { log "error: $*"; exit 1; }

is_root() { [[ $(id -u) -eq 0 ]]; }

# Sets TUSER/TUID/TGID/THOME/TRUNTIME for the session user: as root the test user (or
# the user named by $1, e.g. the remote one), the caller itself otherwise. Returns 1 if
# that user does not exist yet.
session_identity() {
    if is_root; then
        local ent
        ent=$(getent passwd "${1:-$MAQET_TEST_USER}") || return 1
        IFS=: read -r TUSER _ TUID TGID _ THOME _ <<<"$ent"
        TRUNTIME=/run/user/$TUID
    else
        TUSER=$(id -un)
        TUID=$(id -u)
        TGID=$(id -g)
        THOME=${HOME:-$(getent passwd "$TUID" | cut -d: -f6)}
        TRUNTIME=${XDG_RUNTIME_DIR:-/run/user/$TUID}
    fi
}

# The environment a process of the session user sees, one NAME=VALUE per line.
session_env_lines() {
    local bus="unix:path=$TRUNTIME/bus" path=$USER_PATH
    if ! is_root; then
        # A real desktop session: keep what it already has.
        bus=${DBUS_SESSION_BUS_ADDRESS:-$bus}
        path=$PATH
    fi
    printf '%s\n' "XDG_RUNTIME_DIR=$TRUNTIME" "DBUS_SESSION_BUS_ADDRESS=$bus" \
        "HOME=$THOME" "USER=$TUSER" "LOGNAME=$TUSER" "PATH=$path"
}

# Extra variables worth carrying from the caller into the session user's commands
# (terminal, locale, test knobs). Anything else of root's (CARGO_HOME=/root/...)
# would point at files the user cannot read.
passthrough_env_lines() {
    local name
    while IFS= read -r name; do
        case $name in
            TERM | LANG | LC_ALL | NO_COLOR | SYSTEMD_PAGER | SYSTEMD_LOG_LEVEL | \
                RUST_LOG | RUST_BACKTRACE | MAQET_*)
                printf '%s=%s\n' "$name" "${!name}" ;;
        esac
    done < <(compgen -e)
}

# Sets AS_USER to the argv prefix that runs a command as the session user with
# exactly the session environment (root only).
# setpriv execs in place (no PAM, no extra parent), so exit codes and signals pass
# straight through; --init-groups picks up kvm and systemd-journal.
session_user_cmd() {
    local -a envv
    mapfile -t envv < <(passthrough_env_lines; session_env_lines)
    AS_USER=(setpriv --reuid="$TUID" --regid="$TGID" --init-groups -- env -i "${envv[@]}")
}
run_as_session_user() {
    session_user_cmd
    "${AS_USER[@]}" "$@"
}

# MAQET_TEST_SSH_PORT=... and the rest of what sshd.sh recorded for the tests, one
# NAME=VALUE a line. Nothing when it has not run, or for a caller other than root: then
# the tests run as the caller, whose key the remote user does not know.
remote_env_lines() {
    is_root && [[ -r $REMOTE_ENV_FILE ]] && cat "$REMOTE_ENV_FILE"
    return 0
}
