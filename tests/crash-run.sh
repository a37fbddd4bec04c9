#!/usr/bin/env bash
# crash-run.sh — the body of `make crash` (tests/crash.sh stages it), run as
# the session user with `maqet` on PATH. CRASH_ITERATIONS rounds (default
# 60), cycling through four operations; each is SIGKILLed, with every
# process it started (its process group: qemu-img too), at a random point
# between 0 and 1.2 × its uninterrupted duration (measured first):
#
#   clone      `clone SRC DST --full` of two 48 MiB disks
#   create     `storage create` of four disks (one outside the disk dir)
#   rm         `rm --delete-storage` of a VM with three created disks
#   snapshot   `snapshot create` of a 32 MiB disk, offline and --live
#
# After each kill, what a later command would trust is checked:
#   - a clone is absent, or marked incomplete (then `start` refuses it and
#     `storage verify` and `doctor` report it), or complete with copies
#     identical to the source;
#   - no image under its real name is torn: `storage verify` finds none
#     corrupt (a snapshot interrupted inside qemu-img may leave leaks, a
#     warning);
#   - every temporary file left (`.NAME.maqet-PID.tmp`) is reported by
#     `storage verify` or `doctor`, and `doctor --fix` / the next command
#     removes it;
#   - an interrupted `rm --delete-storage` leaves the definition with its
#     records (files it deleted show as missing) or nothing at all;
#   - afterwards `rm --delete-storage` leaves nothing of the VM, or names
#     what it keeps.
# Any violation is printed and makes the run fail. CRASH_SEED fixes the
# random points. (Output is read whole before grep -q: under pipefail an
# early grep exit would make the writer's SIGPIPE the pipeline's status.)
set -uo pipefail
iterations=${CRASH_ITERATIONS:-60}
RANDOM=${CRASH_SEED:-$$}
qemu=${CRASH_QEMU:-/usr/bin/qemu-system-x86_64}
work=$(mktemp -d "${TMPDIR:-/tmp}/maqet-crash-XXXXXX")
export MAQET_DATA_DIR=$work/data
disks=$MAQET_DATA_DIR/disks
tag=crash$$
violations=0
declare -A count=()

cleanup() {
    local vm
    for vm in $(maqet ls --json 2>/dev/null | python3 -c 'import json,sys; [print(v["name"]) for v in json.load(sys.stdin)]' 2>/dev/null); do
        maqet rm --force --delete-storage "$vm" >/dev/null 2>&1
    done
    rm -rf "$work"
}
trap cleanup EXIT

violation() {
    echo "VIOLATION ($1): $2" >&2
    violations=$((violations + 1))
}
bump() { count[$1]=$((${count[$1]:-0} + 1)); }

define() { # NAME STORAGE-YAML
    printf 'name: %s\nbinary: %s\nmemory: 64M\nshutdown_timeout: 1\narguments:\n  - accel: tcg\n  - display: none\n  - nodefaults\n%s' \
        "$1" "$qemu" "$2" >"$work/$1.yaml"
    maqet add "$work/$1.yaml" >/dev/null
}

# KILL_AFTER ARGS...: runs `maqet ARGS` and SIGKILLs its process group after
# KILL_AFTER seconds (GNU timeout makes itself the group leader and signals
# the whole group), then waits until every process of the group is gone (a
# process in the middle of a system call, an fsync say, dies only when it
# returns). Prints "killed" or "finished RC".
killed_run() {
    local after=$1
    shift
    timeout -s KILL "$after" maqet "$@" >"$work/out" 2>&1 &
    local group=$!
    wait "$group"
    local rc=$?
    while pgrep -g "$group" >/dev/null; do sleep 0.01; done
    if ((rc == 137 || rc == 124)); then echo killed; else echo "finished $rc"; fi
}

# Seconds an uninterrupted `maqet ARGS` takes.
duration() {
    local t0 t1
    t0=$(date +%s.%N)
    maqet "$@" >/dev/null 2>&1
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}

# A random point in [0.01, 1.2 × $1] seconds.
point() { awk -v d="$1" -v r="$RANDOM" 'BEGIN { printf "%.3f", 0.01 + d * 1.2 * r / 32767 }'; }

verify_json() { maqet storage verify "$@" --json 2>/dev/null || true; }

# Statuses of `storage verify VM --json` rows: "DISK STATUS" per line.
statuses() {
    verify_json "$1" | python3 -c '
import json, sys
try:
    rows = json.load(sys.stdin)
except ValueError:
    rows = []
for r in rows:
    print(r["disk"].replace(" ", "_"), r["status"], r["path"])'
}

defined() { maqet info "$1" >/dev/null 2>&1; }

# Every temporary file under DIRS... must be in verify's (for VM $1) or
# doctor's report.
leftovers_reported() {
    local vm=$1 f
    shift
    local reported
    reported=$({
        [[ -n $vm ]] && defined "$vm" && verify_json "$vm"
        maqet doctor --json 2>/dev/null
    } | grep -o '[^" ]*\.maqet-[0-9-]*\.tmp' | sort -u)
    while IFS= read -r f; do
        [[ -z $f ]] && continue
        bump leftovers_found
        grep -qxF "$f" <<<"$reported" || violation "$vm" "temporary file $f is not reported"
    done < <(find "$@" -name '.*.maqet-*.tmp' 2>/dev/null)
}

# rm --delete-storage VM: must succeed and leave nothing under DIRS... that
# it does not name as kept.
remove_all() {
    local vm=$1 out f
    shift
    out=$(maqet rm --force --delete-storage "$vm" 2>&1) || violation "$vm" "rm --delete-storage failed: $out"
    while IFS= read -r f; do
        [[ -z $f ]] && continue
        if grep -qF "kept $f" <<<"$out"; then bump kept_named; else violation "$vm" "$f left behind unnamed: $out"; fi
    done < <(find "$@" -mindepth 0 \( -type f -o -type d \) 2>/dev/null | sort -r |
        while read -r p; do [[ -d $p && -n $(ls -A "$p" 2>/dev/null) ]] || echo "$p"; done)
}

no_corrupt() { # VM OP
    local disk status path
    while read -r disk status path; do
        case $status in
            corrupt | error) violation "$2" "$1/$disk ($path) is $status" ;;
            warning) bump leaked_warnings ;;
        esac
    done < <(statuses "$1")
}

sha() { sha256sum "$1" | cut -c1-64; }

# ------------------------------------------------------------------ setup
src=$tag-src
define "$src" $'storage:\n  - {name: a, size: 64M}\n  - {name: b, size: 64M}\n'
maqet storage create "$src" >/dev/null
for d in a b; do
    qemu-io -f qcow2 -c "write -P 0x5a 0 48M" "$disks/$src/$d.qcow2" >/dev/null
done
src_a=$(sha "$disks/$src/a.qcow2")
src_b=$(sha "$disks/$src/b.qcow2")

create_yaml() {
    printf 'storage:\n  - {name: a, size: 2G}\n  - {name: b, size: 2G}\n  - {name: c, type: raw, size: 64M}\n  - {name: d, size: 1G, file: %s/ext-%s/d.qcow2}\n' "$work" "$1"
}
data_disk() { # VM: one qcow2 disk with 32 MiB of data
    define "$1" $'storage:\n  - {name: d, size: 64M}\n'
    maqet storage create "$1" >/dev/null
    qemu-io -f qcow2 -c "write -P 0x33 0 32M" "$disks/$1/d.qcow2" >/dev/null
}

echo "== calibrating (uninterrupted durations, s)"
declare -A dur=()
dur[clone]=$(duration clone "$src" "$tag-cal-c" --full)
maqet rm --delete-storage "$tag-cal-c" >/dev/null 2>&1
define "$tag-cal-s" "$(create_yaml cal)"
dur[create]=$(duration storage create "$tag-cal-s")
dur[rm]=$(duration rm --delete-storage "$tag-cal-s")
data_disk "$tag-cal-p"
dur[snapshot]=$(duration snapshot create "$tag-cal-p" d s1)
maqet rm --delete-storage "$tag-cal-p" >/dev/null 2>&1
for op in clone create rm snapshot; do printf '  %-9s %6.3f\n' "$op" "${dur[$op]}"; done

# ------------------------------------------------------------------ rounds
ops=(clone create rm snapshot)
t_start=$(date +%s.%N)
for ((i = 0; i < iterations; i++)); do
    op=${ops[i % 4]}
    bump "$op"
    at=$(point "${dur[$op]}")
    case $op in
    clone)
        dst=$tag-c$i
        r=$(killed_run "$at" clone "$src" "$dst" --full)
        [[ $r == killed ]] && bump clone_killed
        if ! defined "$dst"; then
            bump clone_absent
            [[ -e $disks/$dst ]] && violation clone "$dst is not defined but $disks/$dst exists"
        elif grep -q '^(definition) incomplete' <<<"$(statuses "$dst")"; then
            bump clone_incomplete
            maqet start "$dst" >/dev/null 2>&1
            [[ $? -eq 5 ]] || violation clone "start of the incomplete $dst was not refused"
            grep -q "VM '$dst' is incomplete" <<<"$(maqet doctor --json 2>/dev/null)" ||
                violation clone "doctor does not report the incomplete $dst"
        else
            bump clone_complete
            [[ $(sha "$disks/$dst/a.qcow2") == "$src_a" && $(sha "$disks/$dst/b.qcow2") == "$src_b" ]] ||
                violation clone "complete clone $dst has copies that differ from the source"
        fi
        leftovers_reported "$dst" "$disks"
        maqet doctor --fix >/dev/null 2>&1
        [[ -n $(find "$disks" -name '.*.maqet-*.tmp' 2>/dev/null) ]] &&
            violation clone "doctor --fix left temporary files: $(find "$disks" -name '.*.maqet-*.tmp')"
        if defined "$dst"; then remove_all "$dst" "$disks/$dst"; fi
        ;;
    create)
        vm=$tag-s$i
        define "$vm" "$(create_yaml "$i")"
        r=$(killed_run "$at" storage create "$vm")
        [[ $r == killed ]] && bump create_killed
        no_corrupt "$vm" create
        grep -q ' missing ' <<<"$(statuses "$vm")" && violation create "$vm: a recorded disk is missing: $(statuses "$vm")"
        leftovers_reported "$vm" "$disks/$vm" "$work/ext-$i"
        out=$(maqet storage create "$vm" 2>&1) || violation create "the next storage create of $vm failed: $out"
        no_corrupt "$vm" create
        remove_all "$vm" "$disks/$vm" "$work/ext-$i"
        ;;
    rm)
        vm=$tag-r$i
        define "$vm" $'storage:\n  - {name: a, size: 1G}\n  - {name: b, size: 1G}\n  - {name: c, type: raw, size: 16M}\n'
        maqet storage create "$vm" >/dev/null
        r=$(killed_run "$at" rm "$vm" --delete-storage)
        [[ $r == killed ]] && bump rm_killed
        if defined "$vm"; then
            bump rm_defined_after
            no_corrupt "$vm" rm
            n=$(grep -c ' missing ' <<<"$(statuses "$vm")")
            count[rm_reported_missing]=$((${count[rm_reported_missing]:-0} + n))
            remove_all "$vm" "$disks/$vm"
        else
            bump rm_gone_after
            [[ -e $disks/$vm ]] && violation rm "$vm is gone but $disks/$vm stays: $(ls -A "$disks/$vm")"
        fi
        ;;
    snapshot)
        vm=$tag-p$i
        data_disk "$vm"
        live=()
        if ((i % 8 == 7)); then
            maqet start "$vm" >/dev/null
            live=(--live)
            bump snapshot_live
        fi
        r=$(killed_run "$at" snapshot create "$vm" d s1 "${live[@]}")
        [[ $r == killed ]] && bump snapshot_killed
        if ((${#live[@]})); then
            # The runner finishes the job on its own; wait for it, then stop.
            for _ in $(seq 1 600); do
                grep -q '"status": *"running"' <<<"$(maqet qmp run "$vm" query-jobs 2>/dev/null)" || break
                sleep 0.1
            done
            maqet stop --force "$vm" >/dev/null 2>&1
        fi
        no_corrupt "$vm" snapshot
        grep -q '"s1"' <<<"$(maqet snapshot list "$vm" --json 2>/dev/null)" && bump snapshot_taken
        remove_all "$vm" "$disks/$vm"
        ;;
    esac
done
t_end=$(date +%s.%N)

echo
echo "== $iterations kill -9 rounds in $(awk -v a="$t_start" -v b="$t_end" 'BEGIN { printf "%.1f", b - a }') s"
printf '%-10s %6s %8s  %s\n' operation rounds killed outcomes
printf '%-10s %6s %8s  absent %s, incomplete %s (start refused, reported), complete %s (copies identical)\n' \
    clone "${count[clone]:-0}" "${count[clone_killed]:-0}" "${count[clone_absent]:-0}" "${count[clone_incomplete]:-0}" "${count[clone_complete]:-0}"
printf '%-10s %6s %8s  no torn image; the next storage create finished each\n' \
    create "${count[create]:-0}" "${count[create_killed]:-0}"
printf '%-10s %6s %8s  definition kept %s (files it had deleted reported missing: %s), all gone %s\n' \
    rm "${count[rm]:-0}" "${count[rm_killed]:-0}" "${count[rm_defined_after]:-0}" "${count[rm_reported_missing]:-0}" "${count[rm_gone_after]:-0}"
printf '%-10s %6s %8s  live %s, snapshot taken %s, leaked-cluster warnings %s\n' \
    snapshot "${count[snapshot]:-0}" "${count[snapshot_killed]:-0}" "${count[snapshot_live]:-0}" "${count[snapshot_taken]:-0}" "${count[leaked_warnings]:-0}"
echo "temporary files left by kills: ${count[leftovers_found]:-0}, every one reported and removed; files rm kept and named: ${count[kept_named]:-0}"
echo "violations: $violations"
((violations == 0))
