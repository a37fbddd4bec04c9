#!/usr/bin/env bash
# The whole test suite (`make test`):
#   1. as root on a bare machine: install QEMU etc. and bring up a real
#      `systemd --user` session for an unprivileged test user (tests/session/);
#   2. unit tests (pure logic) with cargo;
#   3. integration tests — the real maqet binaries against that user manager,
#      its session bus, journald and QEMU — run as that user.
# As an ordinary user with a working `systemctl --user`, step 1 only checks it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
session=$root/tests/session

if [[ $(id -u) -eq 0 ]]; then
    bash "$session/install-deps.sh"
fi
bash "$session/user-session.sh" up

echo "== build"
cargo build --locked --bins --tests --features integration 2>&1 | tail -n 3

# A test that hangs must fail the run, not use up CI's time: every test
# binary has a deadline (seconds; far above what each needs).
unit_deadline=${MAQET_UNIT_DEADLINE:-900}
it_deadline=${MAQET_TEST_DEADLINE:-1800}

echo "== unit tests"
unit_log=$(mktemp)
timeout --kill-after=10 "$unit_deadline" cargo test --locked --workspace --lib --bins --features integration 2>&1 |
    tee "$unit_log" | grep -E '^(test result|failures:|---- )' || true
unit_ok=$(grep -E '^test result' "$unit_log" | grep -c 'ok\.' || true)
if grep -qE '^test result: FAILED' "$unit_log" || [[ $unit_ok -eq 0 ]]; then
    cat "$unit_log"
    echo "unit tests failed" >&2
    exit 1
fi

echo "== integration tests"
# The test user cannot read root's target/ (or ~/.cargo): stage the binaries
# where it can. Rebuilt every run, so never stale.
# One staging directory per checkout, so several checkouts can test at once.
stage=/var/tmp/maqet-it-$(printf '%s' "$root" | md5sum | cut -c1-8)
rm -rf "$stage"
mkdir -p "$stage/bin"
cp target/debug/maqet target/debug/maqet-runner "$stage/bin/"
mapfile -t tests < <(cargo test --locked --no-run --features integration --message-format=json 2>/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["executable"])
')
# MAQET_TESTS="lifecycle faults" runs only those integration test files.
if [[ -n ${MAQET_TESTS:-} ]]; then
    keep=()
    for t in "${tests[@]}"; do
        for want in $MAQET_TESTS; do
            [[ $(basename "$t") == "$want"-* ]] && keep+=("$t")
        done
    done
    tests=("${keep[@]}")
fi
for t in "${tests[@]}"; do cp "$t" "$stage/"; done
# The booting test guest (tests/guest/build.sh caches it), copied beside the
# binaries for the test user's QEMU.
echo "== test guest"
guest_env=$(bash "$root/tests/guest/build.sh")
mkdir -p "$stage/guest"
cp "$(sed -n 's/^MAQET_GUEST_KERNEL=//p' <<<"$guest_env")" "$stage/guest/vmlinuz"
cp "$(sed -n 's/^MAQET_GUEST_INITRD=//p' <<<"$guest_env")" "$stage/guest/initrd.gz"
chmod -R a+rX "$stage"

threads=${MAQET_TEST_THREADS:-4}
# At most this many test binaries at once: the guest-booting ones run QEMU
# under TCG, and two cores shared by all of them at once turned generous
# timeouts into failures. The slow binaries go first so the tail is short.
jobs=${MAQET_TEST_JOBS:-4}
slow=" cloud desktop image networks ops restart guest vm_api hostile_ipc storage_safety data_safety state_faults "
ordered=()
for t in "${tests[@]}"; do
    b=$(basename "$t")
    [[ $slow == *" ${b%-*} "* ]] && ordered+=("$t")
done
for t in "${tests[@]}"; do
    b=$(basename "$t")
    [[ $slow == *" ${b%-*} "* ]] || ordered+=("$t")
done
# How to reach the remote-host tests' sshd and user (tests/session/sshd.sh): the
# MAQET_TEST_SSH_* lines it recorded; none when not root (then there is no remote user).
mapfile -t remote_env < <(source "$session/lib.sh" && remote_env_lines)
status=0
running=0
for t in "${ordered[@]}"; do
    if ((running >= jobs)); then
        wait -n || status=1
        running=$((running - 1))
    fi
    b=$(basename "$t")
    (
        rc=0
        timeout --kill-after=10 "$it_deadline" bash "$session/as-user.sh" env \
            MAQET_BIN_DIR="$stage/bin" RUST_BACKTRACE=1 "${remote_env[@]}" \
            MAQET_GUEST_KERNEL="$stage/guest/vmlinuz" MAQET_GUEST_INITRD="$stage/guest/initrd.gz" \
            "$stage/$b" --test-threads="$threads" >"$stage/$b.log" 2>&1 || rc=$?
        if ((rc == 124 || rc == 137)); then
            echo "$b: killed after its deadline of ${it_deadline}s (a test hangs)" >>"$stage/$b.log"
        fi
        exit "$rc"
    ) &
    running=$((running + 1))
done
while ((running > 0)); do
    wait -n || status=1
    running=$((running - 1))
done
passed=0
failed=0
for t in "${tests[@]}"; do
    b=$(basename "$t")
    if grep -q '^test result: FAILED' "$stage/$b.log" || ! grep -q '^test result' "$stage/$b.log"; then
        cat "$stage/$b.log"
    else
        grep -E '^test .* \.\.\. ' "$stage/$b.log" || true
    fi
    grep -E '^test result' "$stage/$b.log" || true
    p=$(sed -nE 's/^test result: .* ([0-9]+) passed; ([0-9]+) failed.*/\1/p' "$stage/$b.log")
    f=$(sed -nE 's/^test result: .* ([0-9]+) passed; ([0-9]+) failed.*/\2/p' "$stage/$b.log")
    passed=$((passed + ${p:-0}))
    failed=$((failed + ${f:-0}))
done
# The packaging test installs a .deb system-wide: root only. It runs with
# the whole suite, or with MAQET_TESTS naming "package".
pkg_p=0
pkg_f=0
if [[ -z ${MAQET_TESTS:-} || " $MAQET_TESTS " == *" package "* ]]; then
    if [[ $(id -u) -eq 0 ]]; then
        echo "== package test"
        pkg_log=$stage/package.log
        # The integration feature keeps cargo from rebuilding what was built above.
        PROFILE=debug CARGOFLAGS="--features integration" bash packaging/test-deb.sh >"$pkg_log" 2>&1 || status=1
        grep -E '^(ok|not ok|skip) |^package: ' "$pkg_log" || true
        if grep -q '^not ok' "$pkg_log" || ! grep -q '^package: ' "$pkg_log"; then
            cat "$pkg_log"
        fi
        pkg_p=$(sed -nE 's/^package: ([0-9]+) passed, ([0-9]+) failed$/\1/p' "$pkg_log")
        pkg_f=$(sed -nE 's/^package: ([0-9]+) passed, ([0-9]+) failed$/\2/p' "$pkg_log")
        [[ -n $pkg_f ]] || pkg_f=1
        passed=$((passed + ${pkg_p:-0}))
        failed=$((failed + pkg_f))
    else
        echo "== package test skipped: it installs a .deb, run it as root (make package-test)"
    fi
fi
u_p=$(sed -nE 's/^test result: .* ([0-9]+) passed; ([0-9]+) failed.*/\1/p' "$unit_log" | awk '{s+=$1} END {print s+0}')
echo
echo "integration + package: $passed passed, $failed failed (package: ${pkg_p:-0} passed, $pkg_f failed); unit: ${u_p:-0} passed"
echo "total: $((passed + ${u_p:-0})) passed, $failed failed"
[[ $status -eq 0 && $failed -eq 0 ]]
