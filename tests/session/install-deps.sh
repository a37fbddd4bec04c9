#!/usr/bin/env bash
# Installs what the maqet test session needs (Debian/Ubuntu, as root).
# A fast no-op when everything is already installed; otherwise one
# `apt-get update` followed by one `apt-get install` of the missing packages.
set -euo pipefail

PACKAGES=(
    qemu-system-x86   # the VMs
    qemu-utils        # qemu-img (storage tests)
    systemd           # systemd --user, journald, systemctl, busctl, journalctl
    dbus-user-session # user bus socket-activated by the user manager
    dbus              # dbus-daemon, pulled by dbus-user-session; listed for clarity
    busybox-static    # guest initramfs userland
    cpio              # packing that initramfs
    dropbear-bin      # the test guest's ssh server (copied into its initramfs)
    openssh-client    # `maqet ssh`, `maqet -H`, and ssh-keygen in the cloud tests
    openssh-server    # the loopback sshd of the remote-host tests (tests/session/sshd.sh)
    qemu-guest-agent  # the test guest's agent (copied into its initramfs)
    e2fsprogs         # mkfs.ext4: a freezable data disk for the live-snapshot freeze test
    python3           # stand-in services and helpers in session tests
    procps            # ps/pgrep used by the session scripts
    util-linux        # setpriv, setsid, flock, runuser
    passwd            # useradd/groupadd/usermod
    make              # make install / make deb (packaging test)
    dpkg-dev          # dpkg-shlibdeps for the .deb's Depends
    man-db            # man: the installed man pages are read back
    zsh               # the generated completions are run in each shell
    fish
    ovmf              # UEFI firmware + QEMU firmware descriptors (desktop tests)
    swtpm             # TPM 2.0 emulator, the tpm: true companion unit
    swtpm-tools       # swtpm_setup, used by swtpm for first-time TPM state
    xz-utils          # xz: compressed images in the image tests
    zstd              # zstd: the decompression unit test
    curl              # make bench: download throughput against curl -o
    openssl           # a CA and server certificate for the image tests' HTTPS server
    passt             # `network: passt`, the maqet-net@ companion unit
    vde-switch        # vde_switch: the maqet-switch@ unit of `networks:` segments
    socat             # answers UDP in the test guest (passt's UDP forwards)
    libseccomp-dev    # building virtiofsd (below) where no package has it
    libcap-ng-dev
    pkg-config
)

missing=()
for pkg in "${PACKAGES[@]}"; do
    # dpkg-query is ~5 ms per package; good enough for a no-op path.
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    [[ $status == installed ]] || missing+=("$pkg")
done

# QEMU's own QMP client (`qemu.qmp`, with qmp-shell) for tests/qmp_endpoint.rs:
# pure Python without dependencies, installed where the test user's system
# python3 finds it through PYTHONPATH. A no-op when present.
QMP_PYLIB=/opt/maqet-pylib
install_qemu_qmp() {
    PYTHONPATH=$QMP_PYLIB /usr/bin/python3 -c 'import qemu.qmp' 2>/dev/null && return 0
    if [[ $(id -u) -ne 0 ]]; then
        echo "install-deps: qemu.qmp is missing from $QMP_PYLIB; run as root" >&2
        return 1
    fi
    local pip=(pip3)
    command -v pip3 >/dev/null || pip=(/usr/bin/python3 -m pip)
    echo "install-deps: installing qemu.qmp into $QMP_PYLIB" >&2
    "${pip[@]}" install --quiet --no-deps --target "$QMP_PYLIB" 'qemu.qmp==0.0.6'
    chmod -R a+rX "$QMP_PYLIB"
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=qemu-pair.sh
source "$here/qemu-pair.sh"

# qemu-system-x86 and qemu-utils from one QEMU release (qemu-pair.sh says why
# and which): "PKG=VERSION" lines, plus --allow-downgrades when one goes down.
# Sets the array `pair`; exits when no matching pair can be had.
qemu_pair() {
    local out
    out=$(apt-cache policy qemu-system-x86 qemu-utils | qemu_pair_decide) || exit 1
    pair=()
    [[ -z $out ]] || mapfile -t pair <<<"$out"
}

# virtiofsd for `shares:`: Debian 13 and Fedora package it, Debian 12 does
# not; virtiofsd.sh takes the package where there is one and otherwise
# builds it from crates.io into a cache outside the clone. A no-op when
# present.
install_virtiofsd() {
    bash "$here/virtiofsd.sh"
}

pair=()
if ((${#missing[@]} == 0)) && command -v qemu-img >/dev/null; then
    qemu_pair
    if ((${#pair[@]} == 0)); then
        install_qemu_qmp
        install_virtiofsd
        exit 0
    fi
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: missing packages (${missing[*]} ${pair[*]}); run as root" >&2
    exit 1
fi

echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Another apt may be running (image provisioning): wait for its lock instead of failing.
apt_opts=(-q -o DPkg::Lock::Timeout=600)
apt-get "${apt_opts[@]}" update
# Decided after the update, so the versions are what the sources offer now.
qemu_pair
pinned=()
downgrade=()
for arg in "${pair[@]}"; do
    case $arg in
        --allow-downgrades) downgrade=(--allow-downgrades) ;;
        *) pinned+=("$arg") ;;
    esac
done
# The unpinned names would let apt pick again; the pinned spelling replaces them.
rest=()
for pkg in "${missing[@]}"; do
    [[ " ${pinned[*]%%=*} " == *" $pkg "* ]] || rest+=("$pkg")
done
((${#pinned[@]} == 0)) || echo "install-deps: QEMU pair: ${pinned[*]} ${downgrade[*]}" >&2
# Packages with a service (openssh-server, dbus, ...) start it from their
# maintainer scripts through invoke-rc.d unless a policy forbids it. PID 1 is no
# init here, so that would be the SysV script: an sshd for the whole machine on
# port 22. The test session starts what it needs itself (sshd.sh: loopback only,
# its own config), so while apt runs, nothing is started: a policy-rc.d saying
# "forbidden" (101), unless the image already has one (Docker images often do).
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\n# install-deps.sh: no services started during its apt-get install\nexit 101\n' \
        >/usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
# No recommends: qemu-system-x86 would otherwise drag in a GUI stack.
apt-get "${apt_opts[@]}" install -y --no-install-recommends "${downgrade[@]}" "${rest[@]}" "${pinned[@]}"
if ! qemu-img --version >/dev/null 2>&1; then
    echo "install-deps: qemu-img is not usable after installing qemu-utils" >&2
    exit 1
fi
install_qemu_qmp
install_virtiofsd
