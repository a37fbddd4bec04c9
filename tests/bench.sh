#!/usr/bin/env bash
# `make bench`: builds release binaries, brings up the user session (as in
# `make test`), and runs tests/bench.py as the session user.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
session=$PWD/tests/session
stage=/var/tmp/maqet-bench
bash "$session/release-stage.sh" "$stage"
install -m 0644 tests/bench.py "$stage/"
bash "$session/as-user.sh" env PATH="$stage/bin:/usr/bin:/bin" python3 "$stage/bench.py"
