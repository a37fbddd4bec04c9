#!/usr/bin/env bash
# `make crash`: kill -9 at random points of `clone --full`, `storage create`,
# `rm --delete-storage` and `snapshot create` (CRASH_ITERATIONS, default 60,
# shared between the four), as the session user, then check what a later
# command would trust (tests/crash-run.sh says what exactly). Prints the
# figures; fails on any violation. Builds the debug binaries (the crash
# points are the same in a release build, and this is not a benchmark);
# CRASH_BIN_DIR=DIR uses the maqet binaries in DIR (world-readable) instead.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
session=$PWD/tests/session
stage=/var/tmp/maqet-crash-$(printf '%s' "$PWD" | md5sum | cut -c1-8)
if [[ $(id -u) -eq 0 ]]; then
    bash "$session/install-deps.sh"
fi
bash "$session/user-session.sh" up
rm -rf "$stage"
mkdir -p "$stage/bin"
if [[ -n ${CRASH_BIN_DIR:-} ]]; then
    cp "$CRASH_BIN_DIR/maqet" "$CRASH_BIN_DIR/maqet-runner" "$stage/bin/"
else
    echo "== building maqet (debug)" >&2
    cargo build --locked --bins 2>&1 | tail -n 1 >&2
    cp target/debug/maqet target/debug/maqet-runner "$stage/bin/"
fi
install -m 0755 tests/crash-run.sh "$stage/"
chmod -R a+rX "$stage"
bash "$session/as-user.sh" env PATH="$stage/bin:/usr/bin:/bin" \
    CRASH_ITERATIONS="${CRASH_ITERATIONS:-60}" CRASH_SEED="${CRASH_SEED:-}" \
    bash "$stage/crash-run.sh"
