#!/usr/bin/env bash
# `make demo`: maqet's main job, end to end. Builds maqet, brings up a user
# session if there is none (as root on a bare machine: a dedicated user with
# its own systemd --user, see tests/session/), defines a small VM, starts it
# as maqet-vm@demo.service, shows what maqet, systemctl and journalctl say,
# talks QMP to it, shows the guest's serial console, then powers it off
# (ACPI) and removes it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
session=$PWD/tests/session
stage=/var/tmp/maqet-demo
bash "$session/release-stage.sh" "$stage"
# The guest: a Debian cloud kernel + busybox initramfs (tests/guest/), built
# once and cached; it boots to a shell on the serial console in ~3 s (TCG).
guest_env=$(bash tests/guest/build.sh)
mkdir -p "$stage/guest"
cp "$(sed -n 's/^MAQET_GUEST_KERNEL=//p' <<<"$guest_env")" "$stage/guest/vmlinuz"
cp "$(sed -n 's/^MAQET_GUEST_INITRD=//p' <<<"$guest_env")" "$stage/guest/initrd.gz"
cat >"$stage/demo.yaml" <<YAML
# A small Linux guest: TCG, 256 MiB, serial console through the runner.
# Any config of the original maqet works the same way.
name: demo
binary: /usr/bin/qemu-system-x86_64
memory: 256M
cpu: 1
console: true
shutdown_timeout: 20
arguments:
  - accel: tcg
  - display: none
  - nodefaults
  - kernel: $stage/guest/vmlinuz
  - initrd: $stage/guest/initrd.gz
  - append: "console=ttyS0 quiet"
YAML
chmod -R a+rX "$stage"

# Runs the rest as the session user (ourselves when not root).
# The VM is defined in that user's own data directory (~/.local/share/maqet).
as_user() { bash "$session/as-user.sh" env PATH="$stage/bin:/usr/bin:/bin" "$@"; }

show() {
    printf '\n$ %s\n' "$*"
    as_user "$@"
}

as_user sh -c 'maqet rm --force demo >/dev/null 2>&1 || true'
show maqet add "$stage/demo.yaml"
since=$(date '+%Y-%m-%d %H:%M:%S')
show maqet start demo
show maqet ls
show maqet status demo
show systemctl --user status maqet-vm@demo.service --no-pager --lines=0
show systemctl --user status maqet-vm@demo.socket --no-pager --lines=0
show maqet qmp run demo query-status
# Wait for the guest's shell, then show its boot log from the runner's buffer.
for _ in $(seq 100); do
    as_user maqet console demo --dump 2>/dev/null | grep -q 'maqet-test-guest: ready' && break
    sleep 0.2
done
show maqet console demo --dump
show journalctl --user -u maqet-vm@demo.service --no-pager -o short-iso --since "$since"
show maqet stop demo
show maqet ls
show maqet rm demo
echo
echo "demo finished: the VM ran as maqet-vm@demo.service and was stopped and removed"
