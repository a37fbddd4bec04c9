#!/usr/bin/env bash
# qemu-pair.sh — which versions of qemu-system-x86 and qemu-utils to install so
# that both come from one QEMU release.
#
#   apt-cache policy qemu-system-x86 qemu-utils | qemu-pair.sh
#
# prints the apt-get arguments, one a line: nothing when the installed pair
# already matches (or nothing is to be done), otherwise `PKG=VERSION` lines and
# `--allow-downgrades` when a package has to go down. Exits 1 with a reason when
# no matching pair can be had. Sourced by install-deps.sh; tested on recorded
# `apt-cache policy` output by tests/install_deps.rs.
#
# Why a pair: qemu-utils and qemu-system-common are built from one source and
# qemu-utils of QEMU ≥ 8 Breaks Debian 12's qemu-system-common (7.2). Some
# Debian 12 images ship qemu-utils 10.0 from bookworm-backports (for qemu-img)
# without the backports source; apt never downgrades on its own, so asking for
# both packages fails with "Breaks: qemu-system-common".
#
# The rule: qemu-system-x86 decides. Its installed version if it is installed,
# otherwise the version apt would pick for it (its Candidate, which honours the
# admin's sources and pins). qemu-utils goes to exactly that version, down if
# need be. So a plain Debian 12 machine ends with both from Debian 12 (QEMU 7.2,
# the release maqet's tests and DESIGN.md's facts were verified on) — even when
# the image came with qemu-utils from backports — and a machine whose admin
# pinned backports for QEMU ends with both from that backports release.
set -euo pipefail

# Reads `apt-cache policy A B …` on stdin; prints "PKG INSTALLED CANDIDATE
# VERSION…" for each package, "(none)" where there is none. VERSION… are the
# versions some source (not only dpkg's status file) offers.
qemu_pair_parse() {
    awk '
        function flush() {
            if (pkg != "") print pkg, inst, cand, avail
            pkg = ""; avail = ""; ver = ""
        }
        /^[^ ].*:$/ { flush(); pkg = substr($0, 1, length($0) - 1); inst = "(none)"; cand = "(none)"; next }
        /^  Installed: / { inst = $2; next }
        /^  Candidate: / { cand = $2; next }
        /^ (\*\*\*|   ) [^ ]+ -?[0-9]+$/ { ver = ($1 == "***") ? $2 : $1; next }
        /^        -?[0-9]+ / {
            if (ver != "" && $2 != "/var/lib/dpkg/status" && index(" " avail " ", " " ver " ") == 0)
                avail = avail " " ver
            next
        }
        END { flush() }
    '
}

# The decision, from `apt-cache policy` text on stdin (see the header).
qemu_pair_decide() {
    local parsed line name inst cand avail
    local sys_inst="" sys_cand="" sys_avail="" utils_inst="" utils_avail=""
    parsed=$(qemu_pair_parse)
    while IFS= read -r line; do
        read -r name inst cand avail <<<"$line"
        case $name in
            qemu-system-x86) sys_inst=$inst sys_cand=$cand sys_avail=" $avail " ;;
            qemu-utils) utils_inst=$inst utils_avail=" $avail " ;;
        esac
    done <<<"$parsed"
    if [[ -z $sys_inst || -z $utils_inst ]]; then
        echo "qemu-pair: apt-cache policy did not describe both qemu-system-x86 and qemu-utils" >&2
        return 1
    fi

    local target
    if [[ $sys_inst != "(none)" ]]; then
        target=$sys_inst
    elif [[ $sys_cand != "(none)" ]]; then
        target=$sys_cand
    else
        echo "qemu-pair: apt offers no qemu-system-x86; enable Debian's main component" >&2
        return 1
    fi
    [[ $utils_inst == "$target" ]] && return 0

    if [[ $utils_avail != *" $target "* ]]; then
        echo "qemu-pair: qemu-system-x86 is $target but no source offers qemu-utils $target;" \
            "add the sources that qemu-system-x86 $target comes from (or install the pair by hand)" >&2
        return 1
    fi
    [[ $sys_inst == "(none)" ]] && echo "qemu-system-x86=$target"
    echo "qemu-utils=$target"
    if [[ $utils_inst != "(none)" ]] && ! dpkg --compare-versions "$target" ge "$utils_inst"; then
        echo "--allow-downgrades"
    fi
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    qemu_pair_decide
fi
