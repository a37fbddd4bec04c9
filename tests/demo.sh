#!/usr/bin/env bash
# `make demo`: maqet's main job, end to end. Builds maqet, brings up a user
# session if there is none (as root on a bare machine: a dedicated user with
# its own systemd --user, see tests/session/), defines a small VM, starts it
# as maqet-vm@demo.service, shows what maqet, systemctl and journalctl say,
# talks QMP to it, then stops and removes it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
session=$PWD/tests/session
stage=/var/tmp/maqet-demo
bash "$session/release-stage.sh" "$stage"
cat >"$stage/demo.yaml" <<'YAML'
# A small headless VM: TCG, 128 MiB, no disks. Any config of the original
# maqet works the same way.
name: demo
binary: /usr/bin/qemu-system-x86_64
memory: 128M
cpu: 1
arguments:
  - accel: tcg
  - display: none
  - nodefaults
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
show maqet start demo
show maqet ls
show maqet status demo
show systemctl --user status maqet-vm@demo.service --no-pager --lines=0
show systemctl --user status maqet-vm@demo.socket --no-pager --lines=0
show maqet qmp run demo query-status
show journalctl --user -u maqet-vm@demo.service --no-pager -o short-iso -n 15
show maqet stop demo --timeout 2
show maqet ls
show maqet rm demo
echo
echo "demo finished: the VM ran as maqet-vm@demo.service and was stopped and removed"
