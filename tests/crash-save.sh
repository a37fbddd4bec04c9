#!/usr/bin/env bash
# `make crash-save`: kill -9 of the runner or QEMU at random points of a
# VM's save (`maqet suspend`, `systemctl --user stop` under `on_stop: save`),
# CRASH_ITERATIONS rounds (default 24), as the session user; then checks
# that a start resumes a complete state or boots afresh and that the disk
# passes `qemu-img check` (tests/crash-save-run.sh says what exactly).
# Prints the figures; fails on any violation. Builds the debug binaries;
# CRASH_BIN_DIR=DIR uses the maqet binaries in DIR instead.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
session=$PWD/tests/session
stage=/var/tmp/maqet-crash-save-$(printf '%s' "$PWD" | md5sum | cut -c1-8)
if [[ $(id -u) -eq 0 ]]; then
    bash "$session/install-deps.sh"
fi
bash "$session/user-session.sh" up
rm -rf "$stage"
mkdir -p "$stage/bin" "$stage/guest"
if [[ -n ${CRASH_BIN_DIR:-} ]]; then
    cp "$CRASH_BIN_DIR/maqet" "$CRASH_BIN_DIR/maqet-runner" "$stage/bin/"
else
    echo "== building maqet (debug)" >&2
    cargo build --locked --bins 2>&1 | tail -n 1 >&2
    cp target/debug/maqet target/debug/maqet-runner "$stage/bin/"
fi
guest_env=$(bash tests/guest/build.sh)
cp "$(sed -n 's/^MAQET_GUEST_KERNEL=//p' <<<"$guest_env")" "$stage/guest/vmlinuz"
cp "$(sed -n 's/^MAQET_GUEST_INITRD=//p' <<<"$guest_env")" "$stage/guest/initrd.gz"
install -m 0755 tests/crash-save-run.sh "$stage/"
chmod -R a+rX "$stage"
bash "$session/as-user.sh" env PATH="$stage/bin:/usr/bin:/bin" \
    MAQET_GUEST_KERNEL="$stage/guest/vmlinuz" MAQET_GUEST_INITRD="$stage/guest/initrd.gz" \
    CRASH_ITERATIONS="${CRASH_ITERATIONS:-24}" CRASH_SEED="${CRASH_SEED:-}" \
    bash "$stage/crash-save-run.sh"
