#!/usr/bin/env bash
# `make soak`: N rounds (SOAK_ROUNDS, default 3) of SOAK_VMS (default 40)
# concurrent start / QMP query / graceful stop / rm of tiny VMs (TCG, 64M,
# no guest), as the session user like `make bench`. Fails unless every call
# succeeded, none hung (each is under `timeout`) and nothing was left
# behind (units, socket files, QEMU processes). Prints per-round figures.
# SOAK_BIN_DIR=DIR uses the maqet binaries in DIR (world-readable) instead
# of a fresh release build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
session=$PWD/tests/session
stage=/var/tmp/maqet-soak
if [[ -n ${SOAK_BIN_DIR:-} ]]; then
    bash "$session/user-session.sh" up
    rm -rf "$stage"
    mkdir -p "$stage/bin"
    cp "$SOAK_BIN_DIR/maqet" "$SOAK_BIN_DIR/maqet-runner" "$stage/bin/"
    chmod -R a+rX "$stage"
else
    bash "$session/release-stage.sh" "$stage"
fi
install -m 0755 tests/soak-run.sh "$stage/"
bash "$session/as-user.sh" env PATH="$stage/bin:/usr/bin:/bin" \
    SOAK_ROUNDS="${SOAK_ROUNDS:-3}" SOAK_VMS="${SOAK_VMS:-40}" \
    SOAK_CALL_TIMEOUT="${SOAK_CALL_TIMEOUT:-120}" bash "$stage/soak-run.sh"
