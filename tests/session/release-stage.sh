#!/usr/bin/env bash
# release-stage.sh DIR — what `make demo` and `make bench` share: install the
# dependencies (as root), bring up the user session, build the release
# binaries and copy them to DIR/bin, world-readable, for the session user
# (root's target/ is not readable by it).
set -euo pipefail
(($# == 1)) || { echo "usage: $0 DIR" >&2; exit 2; }
stage=$1
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
session=$PWD/tests/session
if [[ $(id -u) -eq 0 ]]; then
    bash "$session/install-deps.sh"
fi
bash "$session/user-session.sh" up
echo "== building maqet (release)" >&2
cargo build --release --locked --bins 2>&1 | tail -n 1 >&2
rm -rf "$stage"
mkdir -p "$stage/bin"
cp target/release/maqet target/release/maqet-runner "$stage/bin/"
chmod -R a+rX "$stage"
