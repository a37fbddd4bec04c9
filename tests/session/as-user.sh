#!/usr/bin/env bash
# as-user.sh CMD ARGS...  — run CMD inside the test session and pass its exit code back.
#
# As root: runs CMD as the test user (maqet-test) with exactly the session environment
# (XDG_RUNTIME_DIR, DBUS_SESSION_BUS_ADDRESS, HOME, USER, LOGNAME, PATH, plus TERM/LANG/
# RUST_*/MAQET_* from the caller), in the caller's directory if the user can enter it,
# else in the user's home. As any other user: runs CMD directly in the caller's session.
# Start the session first with `user-session.sh up`.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

(($# > 0)) || die "usage: $0 CMD [ARGS...]"

if ! is_root; then
    exec "$@"
fi

session_identity || die "no user $MAQET_TEST_USER; run '$here/user-session.sh up' first"

session_user_cmd
# The cd happens as the user, so "can enter it" is the kernel's own answer. Every
# step execs, so CMD's exit status and signals reach our caller unchanged.
# shellcheck disable=SC2016 # expanded by the inner sh
exec "${AS_USER[@]}" sh -c 'cd -- "$1" 2>/dev/null || cd -- "$HOME" || exit 125
    shift
    exec "$@"' sh "$PWD" "$@"
