#!/usr/bin/env bash
# small-fs.sh UID GID  — (root) mount the tiny filesystem the full-disk tests fill.
#
# tests/state_faults.rs needs a filesystem the unprivileged test user can write into and
# fill to the last byte, without filling the machine's disk: a 1 MiB tmpfs at
# $MAQET_SMALL_FS (default /var/tmp/maqet-it-smallfs), owned by UID:GID, mode 0700.
# Idempotent: an existing tmpfs there with that owner is left alone (its contents too: the
# tests remove what they create). Called by `user-session.sh up`.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

(($# == 2)) || die "usage: $0 UID GID"
uid=$1
gid=$2
dir=${MAQET_SMALL_FS:-/var/tmp/maqet-it-smallfs}

if mountpoint -q "$dir"; then
    if [[ $(stat -f -c %T "$dir") == tmpfs && $(stat -c %u:%g "$dir") == "$uid:$gid" ]]; then
        exit 0
    fi
    die "$dir is a mount point but not the test user's tmpfs; unmount it first"
fi
mkdir -p "$dir"
mount -t tmpfs -o "size=1m,mode=0700,uid=$uid,gid=$gid" maqet-it-smallfs "$dir"
log "mounted a 1 MiB tmpfs for the full-disk tests at $dir"
