#!/usr/bin/env bash
# crash-save-run.sh — the body of `make crash-save` (tests/crash-save.sh
# stages it), run as the session user with `maqet` on PATH and the test
# guest in MAQET_GUEST_KERNEL/MAQET_GUEST_INITRD. CRASH_ITERATIONS rounds
# (default 24) of: a running, counting test guest (`on_stop: save`, its
# shell writing to a qcow2 disk all the time) is saved — by `maqet suspend`,
# or every third round by `systemctl --user stop` — and its runner or its
# QEMU (alternately) is SIGKILLed at a random point between 0 and 1.2 × an
# uninterrupted save's duration. Then:
#   - the disk passes `qemu-img check` (leaked clusters are counted and
#     repaired, not failures: they waste space, never data);
#   - `maqet status` says `saved` only with a state file of the recorded
#     size at its place;
#   - `maqet start` succeeds, and either resumes (it says so, and the guest
#     counts on from where it was) or boots afresh (the count starts at 1),
#     never loading anything else; no temporary file of a save is left.
# Any violation is printed and makes the run fail. CRASH_SEED fixes the
# random points.
set -uo pipefail
iterations=${CRASH_ITERATIONS:-24}
RANDOM=${CRASH_SEED:-$$}
qemu=${CRASH_QEMU:-/usr/bin/qemu-system-x86_64}
work=$(mktemp -d "${TMPDIR:-/tmp}/maqet-crash-save-XXXXXX")
export MAQET_DATA_DIR=$work/data
vm=crashsave$$
disk_dir=$MAQET_DATA_DIR/disks/$vm
violations=0
declare -A count=()

cleanup() {
    maqet rm --force --delete-storage "$vm" >/dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT

violation() {
    echo "VIOLATION (round $i): $1" >&2
    violations=$((violations + 1))
}
bump() { count[$1]=$((${count[$1]:-0} + 1)); }

field() { # JSON-PATH: from `maqet status --json` on stdin
    python3 -c '
import json, sys
v = json.load(sys.stdin)
for k in sys.argv[1].split("."):
    v = v.get(k) if isinstance(v, dict) else None
print("" if v is None else v)' "$1"
}
status() { maqet status "$vm" --json 2>/dev/null | field "$1"; }

# The counts on the console, one per line.
counts() { maqet console "$vm" --dump 2>/dev/null | sed -n 's/.*count=\([0-9]*\) .*/\1/p'; }

wait_count() { # N: until the guest has printed count >= N
    local n
    for _ in $(seq 1 900); do
        n=$(counts | tail -n 1)
        [[ -n $n && $n -ge $1 ]] && return 0
        sleep 0.1
    done
    violation "the guest never counted to $1"
    return 1
}

# The guest's shell writes to its disk without pause (restored with the
# guest on a resume, started again after a fresh boot).
start_writer() {
    printf '%s\n' 'while :; do dd if=/dev/urandom of=/dev/vda bs=64k count=8 seek=$((RANDOM % 1000)) conv=fsync 2>/dev/null; done &' |
        timeout 3 maqet console "$vm" --no-tty >/dev/null 2>&1
}

unit_down() {
    local s
    for _ in $(seq 1 600); do
        s=$(systemctl --user show "maqet-vm@$vm.service" -p ActiveState --value 2>/dev/null)
        [[ $s != active && $s != activating && $s != deactivating ]] && return 0
        sleep 0.1
    done
    violation "the unit never went down"
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
point() { awk -v d="$1" -v r="$RANDOM" 'BEGIN { printf "%.3f", d * 1.2 * r / 32767 }'; }

cat >"$work/$vm.yaml" <<EOF
name: $vm
binary: $qemu
memory: 128M
console: true
guest_agent: true
on_stop: save
shutdown_timeout: 5
arguments:
  - accel: tcg
  - display: none
  - nodefaults
  - kernel: $MAQET_GUEST_KERNEL
  - initrd: $MAQET_GUEST_INITRD
  - append: "console=ttyS0 quiet maqet.count"
storage:
  - {name: d, size: 64M, interface: virtio}
EOF
maqet add "$work/$vm.yaml" >/dev/null || exit 1

echo "== calibrating (an uninterrupted save)"
maqet start "$vm" >/dev/null || exit 1
wait_count 3 || exit 1
start_writer
sleep 1
t0=$(now)
maqet suspend "$vm" >/dev/null || exit 1
save=$(elapsed "$t0" "$(now)")
size=$(stat -c %s "$disk_dir/state.sav")
echo "  save: ${save}s, state file $size bytes"
maqet start "$vm" >/dev/null 2>&1 || exit 1

t_start=$(now)
for ((i = 0; i < iterations; i++)); do
    if [[ $(status state) != running ]]; then
        violation "not running at the start of the round: $(status state)"
        break
    fi
    wait_count 2 || break
    last=$(counts | tail -n 1)
    if ((i % 2 == 0)); then victim=runner; pid=$(status runner_pid); else victim=qemu; pid=$(status qemu_pid); fi
    at=$(point "$save")
    if ((i % 3 == 2)); then
        how=stop
        systemctl --user stop "maqet-vm@$vm.service" >/dev/null 2>&1 &
    else
        how=suspend
        maqet suspend "$vm" >/dev/null 2>&1 &
    fi
    saver=$!
    sleep "$at"
    if kill -9 "$pid" 2>/dev/null; then bump "killed_$victim"; else bump missed; fi
    wait "$saver"
    unit_down
    bump "by_$how"
    # The disk as the kill left it.
    qemu-img check -q "$disk_dir/d.qcow2" >/dev/null 2>&1
    case $? in
        0) ;;
        # Leaks only (a kill while the guest allocated clusters): repaired,
        # so the next round's check sees that round's kill alone.
        3) bump leaks && qemu-img check -q -r leaks "$disk_dir/d.qcow2" >/dev/null 2>&1 ;;
        *) violation "qemu-img check of the disk failed after killing the $victim ($how)" ;;
    esac
    state=$(status state)
    if [[ $state == saved ]]; then
        recorded=$(status saved.size)
        [[ -f $disk_dir/state.sav && $(stat -c %s "$disk_dir/state.sav") == "$recorded" ]] ||
            violation "shown saved without its recorded file ($recorded bytes)"
    fi
    out=$(maqet start "$vm" 2>&1)
    rc=$?
    if ((rc != 0)); then
        violation "start after killing the $victim ($how, state $state) failed: $out"
        break
    fi
    grep -q 'was interrupted' <<<"$out" && bump interrupted_reported
    wait_count 1 || break
    first=$(counts | head -n 1)
    if [[ $state == saved ]]; then
        bump resumed
        grep -q resuming <<<"$out" || violation "a saved VM started without resuming: $out"
        ((first > last)) || violation "resumed at count $first, saved after $last"
    else
        bump fresh
        grep -q resuming <<<"$out" && violation "resumed a state that was not shown saved: $out"
        ((first == 1)) || violation "booted afresh but counted from $first"
        start_writer
    fi
    left=$(find "$disk_dir" -name '.*.tmp' 2>/dev/null)
    [[ -z $left ]] || violation "temporary files left after the start: $left"
done
t_end=$(now)
maqet stop --force "$vm" >/dev/null 2>&1
qemu-img check -q "$disk_dir/d.qcow2" >/dev/null 2>&1
case $? in 0 | 3) ;; *) violation "qemu-img check of the disk failed at the end" ;; esac

echo
echo "== $i kill -9 rounds during saves in $(elapsed "$t_start" "$t_end") s"
echo "saves by: maqet suspend ${count[by_suspend]:-0}, systemctl --user stop ${count[by_stop]:-0}"
echo "killed: runner ${count[killed_runner]:-0}, QEMU ${count[killed_qemu]:-0}, already gone (the save had ended) ${count[missed]:-0}"
echo "then: resumed ${count[resumed]:-0} (the count went on), booted afresh ${count[fresh]:-0} (interrupted save reported: ${count[interrupted_reported]:-0})"
echo "qemu-img check: no corruption; rounds with leaked clusters: ${count[leaks]:-0}"
echo "violations: $violations"
((violations == 0))
