#!/usr/bin/env bash
# `make bench`: builds release binaries, brings up the user session (as in
# `make test`), and runs tests/bench.py as the session user.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
session=$PWD/tests/session
stage=/var/tmp/maqet-bench
bash "$session/release-stage.sh" "$stage"
install -m 0644 tests/bench.py tests/bench_shares.py tests/image_server.py "$stage/"
# The test guest, for launch-to-ssh (tests/guest/build.sh caches it).
guest_env=$(bash tests/guest/build.sh)
mkdir -p "$stage/guest"
cp "$(sed -n 's/^MAQET_GUEST_KERNEL=//p' <<<"$guest_env")" "$stage/guest/vmlinuz"
cp "$(sed -n 's/^MAQET_GUEST_INITRD=//p' <<<"$guest_env")" "$stage/guest/initrd.gz"
# The same guest on Debian's generic kernel, which has 9p: virtiofs against
# 9p (tests/bench_shares.py).
guest_env=$(MAQET_GUEST_FLAVOUR=generic bash tests/guest/build.sh)
mkdir -p "$stage/guest-generic"
cp "$(sed -n 's/^MAQET_GUEST_KERNEL=//p' <<<"$guest_env")" "$stage/guest-generic/vmlinuz"
cp "$(sed -n 's/^MAQET_GUEST_INITRD=//p' <<<"$guest_env")" "$stage/guest-generic/initrd.gz"
chmod -R a+rX "$stage"
# The remote-host sshd and user (tests/session/sshd.sh), for `maqet -H` timings.
mapfile -t remote_env < <(source "$session/lib.sh" && remote_env_lines)
# /usr/local/bin: virtiofsd built by tests/session/virtiofsd.sh.
bash "$session/as-user.sh" env PATH="$stage/bin:/usr/local/bin:/usr/bin:/bin" MAQET_BENCH_GUEST="$stage/guest" \
    "${remote_env[@]}" \
    MAQET_BENCH_GUEST_GENERIC="$stage/guest-generic" python3 "$stage/bench.py"
