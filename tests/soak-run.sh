#!/usr/bin/env bash
# soak-run.sh — the body of `make soak`, run as the session user with `maqet`
# on PATH (tests/soak.sh stages it). Each round: N concurrent `add`, then
# N concurrent `start`, a QMP query each, graceful `stop`, `rm`; every maqet
# call under `timeout` (exit 124 = a hang). Afterwards nothing of the round
# may be left: no maqet-vm unit of its names, no socket file, no QEMU.
# Env: SOAK_ROUNDS (3), SOAK_VMS (40), SOAK_CALL_TIMEOUT (seconds, 120).
set -uo pipefail
rounds=${SOAK_ROUNDS:-3}
vms=${SOAK_VMS:-40}
limit=${SOAK_CALL_TIMEOUT:-120}
qemu=${SOAK_QEMU:-/usr/bin/qemu-system-x86_64}
work=$(mktemp -d "${TMPDIR:-/tmp}/maqet-soak-XXXXXX")
export MAQET_DATA_DIR=$work/data
tag=soak$$
sockdir=${XDG_RUNTIME_DIR:?}/maqet/vm
trap 'rm -rf "$work"' EXIT

name() { echo "$tag-r$1-$2"; }

# Runs `maqet ARGS` for every VM of round $1 at once; the phase name is $2.
# Prints "<failures> <hangs>" and logs each failure to $work/errors.
phase() {
    local round=$1 what=$2
    shift 2
    local pids=() i
    for ((i = 0; i < vms; i++)); do
        local n
        n=$(name "$round" "$i")
        (
            args=()
            for a in "$@"; do args+=("${a//@/$n}"); done
            out=$(timeout -k 5 "$limit" maqet "${args[@]}" 2>&1)
            rc=$?
            if ((rc != 0)); then
                printf 'round %s %s %s: exit %s: %s\n' "$round" "$what" "$n" "$rc" "$out" >>"$work/errors"
            fi
            exit "$rc"
        ) &
        pids+=($!)
    done
    local fail=0 hang=0 p
    for p in "${pids[@]}"; do
        wait "$p"
        case $? in
            0) ;;
            124 | 137) hang=$((hang + 1)); fail=$((fail + 1)) ;;
            *) fail=$((fail + 1)) ;;
        esac
    done
    echo "$fail $hang"
}

# What is left of round $1: units, socket files, QEMU processes.
leftovers() {
    local prefix="$tag-r$1-" units socks procs pid
    units=$(systemctl --user list-units --all --no-legend --plain "maqet-vm@$prefix*" | grep -c . || true)
    socks=$(find "$sockdir" -maxdepth 1 -name "$prefix*.sock" 2>/dev/null | grep -c . || true)
    procs=0
    for pid in $(pgrep -u "$(id -u)" -f "qemu-system.*-name $prefix" || true); do
        procs=$((procs + 1))
    done
    echo "$units $socks $procs"
}

total_fail=0
total_hang=0
total_left=0
printf '%-6s %8s %8s %6s %10s\n' round wall_s failures hangs leftovers
for ((r = 1; r <= rounds; r++)); do
    for ((i = 0; i < vms; i++)); do
        n=$(name "$r" "$i")
        printf 'name: %s\nbinary: %s\nmemory: 64M\nshutdown_timeout: 1\narguments:\n  - accel: tcg\n  - display: none\n  - nodefaults\n' \
            "$n" "$qemu" >"$work/$n.yaml"
    done
    t0=$(date +%s.%N)
    read -r f1 h1 < <(phase "$r" add add "$work/@.yaml")
    read -r f2 h2 < <(phase "$r" start start @)
    read -r f3 h3 < <(phase "$r" qmp qmp run @ query-status)
    read -r f4 h4 < <(phase "$r" stop stop --timeout 1 @)
    read -r f5 h5 < <(phase "$r" rm rm @)
    t1=$(date +%s.%N)
    fail=$((f1 + f2 + f3 + f4 + f5))
    hang=$((h1 + h2 + h3 + h4 + h5))
    read -r lu ls lp < <(leftovers "$r")
    left=$((lu + ls + lp))
    printf '%-6s %8.1f %8s %6s %10s\n' "$r" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" "$fail" "$hang" \
        "$left (units $lu, sockets $ls, qemu $lp)"
    if ((fail + left > 0)); then
        # Leave the machine clean for the next round (and the user).
        for ((i = 0; i < vms; i++)); do
            timeout -k 5 "$limit" maqet rm --force "$(name "$r" "$i")" >/dev/null 2>&1 || true
        done
    fi
    total_fail=$((total_fail + fail))
    total_hang=$((total_hang + hang))
    total_left=$((total_left + left))
done
echo "total: $rounds rounds x $vms VMs: $total_fail failures, $total_hang hangs, $total_left leftovers"
if [[ -s $work/errors ]]; then
    echo "failures:"
    head -n 40 "$work/errors"
fi
((total_fail == 0 && total_hang == 0 && total_left == 0))
