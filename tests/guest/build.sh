#!/usr/bin/env bash
# Builds maqet's test guest once and caches it: a Debian cloud kernel plus a
# busybox-static initramfs (init: tests/guest/init) that boots to a shell on
# the serial console in ~2–3 s under TCG, powers off on ACPI power-button
# events and echoes keyboard lines to the serial console.
#
#   tests/guest/build.sh      prints MAQET_GUEST_KERNEL=PATH and MAQET_GUEST_INITRD=PATH
#
# Cache: ${XDG_CACHE_HOME:-$HOME/.cache}/maqet-test-guest/ (MAQET_GUEST_CACHE
# overrides). The kernel is downloaded once (`apt-get download` of the package
# linux-image-cloud-amd64 points at, for this machine's Debian release); the
# initramfs is rebuilt only when it is absent or this script or init changed.
#
# MAQET_GUEST_FLAVOUR=generic builds the same guest on Debian's generic kernel
# (linux-image-amd64) instead: the cloud kernel has no 9p, and `make bench`
# compares virtiofs with 9p in one guest. It boots slower; the tests use the
# cloud kernel.
# Needs busybox-static and cpio (tests/session/install-deps.sh installs them),
# and dropbear-bin, qemu-guest-agent and socat: dropbear (ssh server), qemu-ga
# and socat are copied with the libraries ldd names, so the guest can be
# reached through `maqet ssh` and `maqet guest` (issue 11) and answer UDP
# (issue 19).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${MAQET_GUEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/maqet-test-guest}
busybox=/bin/busybox
flavour=${MAQET_GUEST_FLAVOUR:-cloud}
case $flavour in
    cloud) META=linux-image-cloud-amd64 kernel_dir=kernel ;;
    generic) META=linux-image-amd64 kernel_dir=kernel-generic ;;
    *) printf 'guest: error: MAQET_GUEST_FLAVOUR is cloud or generic, not %s\n' "$flavour" >&2; exit 1 ;;
esac

log() { printf 'guest: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# (grep reads all of the list: with -q, busybox could die of SIGPIPE and
# pipefail would turn that into a false "missing".)
if ! [[ -x $busybox ]] || ! "$busybox" --list | grep -x acpid >/dev/null; then
    die "$busybox (package busybox-static) is missing or has no acpid"
fi
command -v cpio >/dev/null || die "cpio is missing (package cpio)"
dropbear=/usr/sbin/dropbear
[[ -x $dropbear ]] || die "$dropbear is missing (package dropbear-bin)"
qga=/usr/sbin/qemu-ga
[[ -x $qga ]] || die "$qga is missing (package qemu-guest-agent)"
# socat answers UDP in the guest (busybox's nc is TCP only): the port
# forward tests of `network: passt`.
socat=/usr/bin/socat
[[ -x $socat ]] || die "$socat is missing (package socat)"
# Modules a cloud image's guest needs: virtio PCI devices (the NoCloud seed
# on virtio-blk, the user-mode NIC), VFAT for the seed, virtiofs (and FUSE,
# which it is built on) for `shares:`. Loaded in this order by init (each
# after what it depends on; the package has no modules.dep).
CLOUD_MODULES=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
    virtio_blk failover net_failover virtio_net virtio_console fat vfat nls_cp437 nls_ascii
    fuse virtiofs)
# The generic kernel also has 9p (virtfs), for the bench's comparison.
if [[ $flavour == generic ]]; then
    CLOUD_MODULES+=(netfs fscache 9pnet 9pnet_virtio 9p)
fi

mkdir -p "$cache"
cleanup=()
trap 'rm -rf "${cleanup[@]}"' EXIT

# The versioned kernel package the meta package depends on, e.g.
# linux-image-6.1.0-56-cloud-amd64.
kernel_package() {
    local pkg
    pkg=$(apt-cache depends "$META" 2>/dev/null | sed -nE 's/^ *Depends: (linux-image-[^ ]+)$/\1/p' | head -n1)
    if [[ -z $pkg && $(id -u) -eq 0 ]]; then
        log "no $META in the package lists; running apt-get update"
        apt-get -q -o DPkg::Lock::Timeout=600 update >&2
        pkg=$(apt-cache depends "$META" 2>/dev/null | sed -nE 's/^ *Depends: (linux-image-[^ ]+)$/\1/p' | head -n1)
    fi
    [[ -n $pkg ]] || die "apt knows no $META (check /etc/apt/sources.list)"
    printf '%s\n' "$pkg"
}

# Finds module NAME.ko[.xz|.zst|.gz] under DIR and writes it, uncompressed, to OUT.
extract_module() {
    local dir=$1 name=$2 out=$3 f
    f=$(find "$dir" -type f \( -name "$name.ko" -o -name "$name.ko.*" \) | head -n1)
    [[ -n $f ]] || die "the kernel package has no $name.ko"
    local tool
    case $f in
        *.ko.xz) tool=xz ;;
        *.ko.gz) tool=gzip ;;
        *.ko.zst) tool=zstd ;;
    esac
    if [[ -n ${tool:-} ]] && ! command -v "$tool" >/dev/null; then
        die "$f is compressed with $tool, which is not installed"
    fi
    case $f in
        *.ko) cp "$f" "$out" ;;
        *.ko.xz) xz -dc "$f" >"$out" ;;
        *.ko.gz) gzip -dc "$f" >"$out" ;;
        *.ko.zst) zstd -qdc "$f" >"$out" ;;
        *) die "unknown module compression: $f" ;;
    esac
}

kdir=$cache/$kernel_dir
if [[ ! -s $kdir/vmlinuz || ! -s $kdir/button.ko || ! -s $kdir/evdev.ko || ! -s $kdir/cloud/${CLOUD_MODULES[-1]}.ko ]]; then
    pkg=$(kernel_package)
    work=$(mktemp -d)
    cleanup+=("$work")
    chmod 0755 "$work" # apt's _apt user writes the download there
    log "downloading $pkg"
    # apt-get download writes to the current directory; _apt may not be able
    # to, which only costs a warning.
    (cd "$work" && apt-get -q download "$pkg" >&2 2>&1) || die "apt-get download $pkg failed"
    dpkg -x "$work"/*.deb "$work/x"
    rm -rf "$kdir.new"
    mkdir -p "$kdir.new"
    cp "$work"/x/boot/vmlinuz-* "$kdir.new/vmlinuz"
    extract_module "$work/x/lib/modules" button "$kdir.new/button.ko"
    extract_module "$work/x/lib/modules" evdev "$kdir.new/evdev.ko"
    mkdir -p "$kdir.new/cloud"
    for m in "${CLOUD_MODULES[@]}"; do
        extract_module "$work/x/lib/modules" "$m" "$kdir.new/cloud/$m.ko"
    done
    basename "$work"/x/boot/vmlinuz-* | sed 's/^vmlinuz-//' >"$kdir.new/release"
    rm -rf "$kdir"
    mv "$kdir.new" "$kdir"
fi

# The initramfs is named after everything that goes into it.
recipe=$(cat "$here/build.sh" "$here/init" "$kdir/button.ko" "$kdir/evdev.ko" "$kdir"/cloud/*.ko "$busybox" "$dropbear" "$qga" "$socat" | sha256sum | cut -c1-12)
initrd=$cache/initrd-$recipe.gz
[[ $flavour == cloud ]] || initrd=$cache/initrd-$flavour-$recipe.gz
if [[ ! -s $initrd ]]; then
    log "building the initramfs ($initrd)"
    root=$(mktemp -d)
    cleanup+=("$root")
    # mktemp made it 0700: the guest's / must be searchable for non-root
    # users (dropbear reads authorized_keys as the user).
    chmod 0755 "$root"
    mkdir -p "$root"/{bin,dev,proc,sys,tmp,root,etc/acpi,lib/modules}
    cp "$busybox" "$root/bin/busybox"
    for applet in $("$busybox" --list); do
        [[ $applet == busybox ]] || ln -s busybox "$root/bin/$applet"
    done
    install -m 0755 "$here/init" "$root/init"
    cp "$kdir/button.ko" "$kdir/evdev.ko" "$kdir"/cloud/*.ko "$root/lib/modules/"
    printf '%s\n' "${CLOUD_MODULES[@]}" >"$root/lib/modules/cloud.order"
    # dropbear and qemu-ga with the shared libraries they load, at the
    # paths ldd names.
    mkdir -p "$root/usr/sbin" "$root/etc/dropbear" "$root/home"
    cp "$dropbear" "$qga" "$socat" "$root/usr/sbin/"
    for lib in $(ldd "$dropbear" "$qga" "$socat" | grep -oE '/[^ ]+' | grep -v ':$' | sort -u); do
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
    echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
    echo 'root:x:0:' >"$root/etc/group"
    # acpid: event class PWRF → the action file `off` in /etc/acpi.
    echo 'PWRF off' >"$root/etc/acpid.conf"
    printf '#!/bin/sh\nexec poweroff -f\n' >"$root/etc/acpi/off"
    chmod 0755 "$root/etc/acpi/off"
    # busybox udhcpc hands what it leased to this script (`maqet.dhcp`).
    cat >"$root/etc/udhcpc.script" <<'SCRIPT'
#!/bin/sh
case $1 in
    bound | renew)
        ip addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface"
        for r in $router; do ip route add default via "$r" dev "$interface"; break; done
        : >/etc/resolv.conf
        for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done
        echo "dhcp: $interface $ip/${mask:-24} router $router dns $dns" >/dev/ttyS0
        ;;
esac
SCRIPT
    chmod 0755 "$root/etc/udhcpc.script"
    # qemu-ga's guest-shutdown runs /sbin/shutdown; its guest-set-time
    # is "not supported" unless /sbin/hwclock exists (it runs `hwclock -w`).
    mkdir -p "$root/sbin"
    printf '#!/bin/sh\nexec poweroff -f\n' >"$root/sbin/shutdown"
    chmod 0755 "$root/sbin/shutdown"
    ln -s /bin/busybox "$root/sbin/hwclock"
    (cd "$root" && find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 | gzip -6) >"$initrd.tmp"
    mv "$initrd.tmp" "$initrd"
    # Older builds are of no use any more — unless another checkout of a
    # different revision still uses them: only day-old ones go.
    find "$cache" -maxdepth 1 -name 'initrd-*.gz' ! -name "${initrd##*/}" -mtime +1 -delete
fi

# World-readable, so the unprivileged test user's QEMU may read a copy.
chmod -R a+rX "$cache"
printf 'MAQET_GUEST_KERNEL=%s\n' "$kdir/vmlinuz"
printf 'MAQET_GUEST_INITRD=%s\n' "$initrd"
