#!/usr/bin/env bash
# `make bench`: builds release binaries, brings up the user session (as in
# `make test`), and runs tests/bench.py as the session user.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
session=$PWD/tests/session
if [[ $(id -u) -eq 0 ]]; then
    bash "$session/install-deps.sh"
fi
bash "$session/user-session.sh" up
cargo build --release --locked --bins 2>&1 | tail -n 1
stage=/var/tmp/maqet-bench
rm -rf "$stage"
mkdir -p "$stage/bin"
cp target/release/maqet target/release/maqet-runner "$stage/bin/"
cp tests/bench.py "$stage/"
chmod -R a+rX "$stage"
bash "$session/as-user.sh" env PATH="$stage/bin:/usr/bin:/bin" python3 "$stage/bench.py"
