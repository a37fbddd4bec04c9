#!/usr/bin/env bash
# Packaging test (as root; `make package-test`, and the last step of tests/run.sh):
#   1. `make install DESTDIR=… PREFIX=/usr` lays out exactly the expected files
#      (derived from the sources: binaries, one man page per command, three
#      completions, units/*, the image catalog images/*.yaml, README and
#      docs/*.md), and `make uninstall` removes them;
#   2. the RPM spec's %files and the PKGBUILD install that same list;
#   3. the Debian package builds, installs with dpkg -i, works from PATH for
#      the session user (version, ls, a real VM start/stop, man pages,
#      completions, `doctor` if the build has it), and dpkg --purge removes it.
# PROFILE=debug (default here; fast) or release. CARGOFLAGS is passed to cargo.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
src=$PWD

if [[ $(id -u) -ne 0 ]]; then
    echo "test-deb: must run as root (it installs and removes the maqet package)" >&2
    exit 1
fi

export PROFILE=${PROFILE:-debug}
export CARGOFLAGS=${CARGOFLAGS:-}
target=${CARGO_TARGET_DIR:-target}
as_user=(bash "$src/tests/session/as-user.sh")
passed=0
failed=0
ok() {
    echo "ok - $1"
    passed=$((passed + 1))
}
not_ok() {
    echo "not ok - $1" >&2
    [[ -z ${2:-} ]] || printf '%s\n' "$2" | sed 's/^/    /' >&2
    failed=$((failed + 1))
}
# check NAME CMD...: CMD's success is the check; its output is shown on failure.
check() {
    local name=$1 out
    shift
    if out=$("$@" 2>&1); then ok "$name"; else not_ok "$name" "$out"; fi
}

work=$(mktemp -d /tmp/maqet-pkgtest.XXXXXX)
chmod 755 "$work"
vm=pkgtest-$$
data_dir=""
cleanup() {
    if [[ -n $data_dir ]] && [[ -x /usr/bin/maqet ]]; then
        "${as_user[@]}" env -u MAQET_RUNNER PATH=/usr/bin:/bin MAQET_DATA_DIR="$data_dir" \
            maqet rm --force "$vm" >/dev/null 2>&1 || true
        "${as_user[@]}" rm -rf "$data_dir" || true
    fi
    if [[ ${installed_by_us:-0} -eq 1 ]]; then
        dpkg --purge maqet >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

echo "== make install (PROFILE=$PROFILE)"
make --no-print-directory install DESTDIR="$work/stage" PREFIX=/usr >"$work/make.log" 2>&1 ||
    { cat "$work/make.log" >&2; exit 1; }
maqet=$target/$PROFILE/maqet

# What must be installed, from the sources alone.
"$maqet" __generate man "$work/man"
{
    printf '%s\n' /usr/bin/maqet /usr/bin/maqet-runner
    for f in "$work"/man/*.1; do echo "/usr/share/man/man1/${f##*/}.gz"; done
    printf '%s\n' /usr/share/bash-completion/completions/maqet \
        /usr/share/zsh/site-functions/_maqet /usr/share/fish/vendor_completions.d/maqet.fish
    for u in units/*.slice units/*.service units/*.socket units/*.target units/*.timer; do
        [[ -e $u ]] && echo "/usr/lib/systemd/user/${u##*/}"
    done
    for d in README.md docs/*.md; do echo "/usr/share/doc/maqet/${d##*/}"; done
    for i in images/*.yaml; do echo "/usr/share/maqet/images/${i##*/}"; done
} | sort >"$work/expected"
(cd "$work/stage" && find . ! -type d | sed 's|^\.||' | sort) >"$work/installed"
check "make install lays out the expected $(wc -l <"$work/expected") files" \
    diff -u "$work/expected" "$work/installed"
wrong_modes=$(cd "$work/stage" && find . -type f \( -path ./usr/bin/\* ! -perm 755 -o ! -path ./usr/bin/\* ! -perm 644 \))
check "binaries are 0755, everything else 0644" test -z "$wrong_modes"
check "the installed man pages are valid roff" \
    sh -c "for p in '$work'/stage/usr/share/man/man1/*.gz; do
        out=\$(MANWIDTH=80 man --warnings -l \"\$p\" 2>&1 >/dev/null); [ -z \"\$out\" ] || { echo \"\$p: \$out\"; exit 1; }; done"
make --no-print-directory uninstall DESTDIR="$work/stage" PREFIX=/usr >/dev/null
check "make uninstall removes every installed file" test -z "$(find "$work/stage" ! -type d)"

echo "== RPM spec and PKGBUILD"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
check "the RPM spec carries Cargo.toml's version $version" \
    grep -qE "^Version: +$version\$" packaging/rpm/maqet.spec
check "PKGBUILD carries version $version" grep -qx "pkgver=$version" packaging/arch/PKGBUILD
# shellcheck disable=SC2016 # the PKGBUILD's own $pkgdir
check "PKGBUILD installs with make install PREFIX=/usr, the default layout" \
    grep -qE '^\s*make install PROFILE=release DESTDIR="\$pkgdir" PREFIX=/usr$' packaging/arch/PKGBUILD
# %files entries, macros expanded; `dir/` means everything below dir.
sed -n '/^%files/,/^%changelog/p' packaging/rpm/maqet.spec | grep '^%{' |
    sed -e 's|%{_bindir}|/usr/bin|' -e 's|%{_mandir}|/usr/share/man|' -e 's|%{_datadir}|/usr/share|' \
        -e 's|%{_userunitdir}|/usr/lib/systemd/user|' -e 's|%{_docdir}|/usr/share/doc|' \
        -e 's|/$|/*|' >"$work/spec-files"
spec_problems=$(
    mapfile -t pats <"$work/spec-files"
    while read -r f; do
        hit=0
        for p in "${pats[@]}"; do
            # shellcheck disable=SC2053 # $p is a glob on purpose
            [[ $f == $p ]] && hit=1
        done
        ((hit)) || echo "installed but not in %files: $f"
    done <"$work/expected"
    for p in "${pats[@]}"; do
        hit=0
        while read -r f; do
            # shellcheck disable=SC2053
            [[ $f == $p ]] && hit=1
        done <"$work/expected"
        # units/ may be empty on a branch; the entry is still right.
        ((hit)) || [[ $p == /usr/lib/systemd/user/* ]] || echo "in %files but not installed: $p"
    done
)
check "the RPM spec's %files match make install exactly" test -z "$spec_problems"
[[ -z $spec_problems ]] || echo "$spec_problems" >&2

echo "== Debian package"
deb=$(DEB_OUT_DIR="$work" bash packaging/debian/build-deb.sh 2>"$work/deb.log") ||
    { cat "$work/deb.log" >&2; exit 1; }
ok "dpkg-deb builds $(basename "$deb") ($(du -k "$deb" | cut -f1) KiB)"
sed -e 's|/usr/share/zsh/site-functions/|/usr/share/zsh/vendor-completions/|' "$work/expected" |
    { cat; echo /usr/share/doc/maqet/copyright; } | sort >"$work/deb-expected"
dpkg-deb -c "$deb" | awk '$1 !~ /^d/ {print $6}' | sed 's|^\.||' | sort >"$work/deb-files"
check "the .deb holds make install's files (zsh: vendor-completions) plus copyright" \
    diff -u "$work/deb-expected" "$work/deb-files"

# One package test at a time on this machine (checkouts test in parallel).
exec 9>/var/lock/maqet-package-test.lock
flock 9
if dpkg-query -W -f='${db:Status-Status}' maqet 2>/dev/null | grep -qx installed; then
    echo "test-deb: note: replacing the maqet package installed on this machine" >&2
fi
installed_by_us=1
check "dpkg -i installs it cleanly" dpkg -i "$deb"
check "dpkg -L lists what the .deb holds" \
    diff -u "$work/deb-files" <(dpkg -L maqet | while read -r f; do [[ -d $f ]] || echo "$f"; done | sort)

# As the session user, from PATH, outside the source tree.
user() { "${as_user[@]}" env -u MAQET_RUNNER -u MAQET_BIN_DIR PATH=/usr/bin:/bin MAQET_DATA_DIR="$data_dir" "$@"; }
data_dir=$("${as_user[@]}" mktemp -d /tmp/maqet-pkgtest-data.XXXXXX)
ver=$(user maqet --version 2>&1 || true)
check "maqet --version from PATH says 'maqet $version'" test "$ver" = "maqet $version"
check "maqet ls with an empty data directory" user maqet ls
cat >"$work/vm.yaml" <<EOF
name: $vm
binary: /usr/bin/qemu-system-x86_64
memory: 64M
arguments:
  - accel: tcg
  - display: none
  - nodefaults
EOF
chmod 644 "$work/vm.yaml"
check "maqet add" user maqet add "$work/vm.yaml"
check "maqet start" user maqet start "$vm"
runner_pid=$(user maqet status "$vm" --json 2>/dev/null | sed -n 's/.*"runner_pid": \([0-9]*\).*/\1/p' || true)
check "the VM runs under the installed runner" \
    test "$(readlink "/proc/${runner_pid:-0}/exe" 2>&1)" = /usr/bin/maqet-runner
check "maqet stop" user maqet stop --force "$vm"
check "maqet rm" user maqet rm "$vm"
catalog=$(user maqet image catalog 2>&1 || true)
check "the installed maqet finds its image catalog (share/maqet/images)" grep -q '^debian-12 ' <<<"$catalog"
# The help is read whole first: `grep -q` stopping early would make
# maqet die of SIGPIPE, and pipefail would read that as "no doctor".
help_text=$(user maqet --help 2>&1 || true)
if grep -qE '^\s+doctor\b' <<<"$help_text"; then
    check "maqet doctor" user maqet doctor
else
    echo "skip - maqet doctor (not in this build)"
fi
# shellcheck disable=SC2016 # expanded by the inner shell
check "man finds maqet(1) and maqet-start(1)" \
    sh -c '[ "$(man -w maqet)" = /usr/share/man/man1/maqet.1.gz ] && MANWIDTH=80 man maqet-start | grep -qE "maqet +start"'
check "bash loads the installed completion" \
    bash -c 'source /usr/share/bash-completion/completions/maqet && complete -p maqet | grep -q _maqet'
if command -v zsh >/dev/null; then
    # -D: no dump file (a dump to /dev/null would replace /dev/null by mv).
    # shellcheck disable=SC2016 # expanded by zsh
    check "zsh finds the installed completion in its default fpath" \
        zsh -fc 'autoload -U compinit && compinit -u -D && [[ ${_comps[maqet]} == _maqet ]]'
fi
if command -v fish >/dev/null; then
    check "fish autoloads the installed completion" \
        sh -c "HOME=$work fish -c 'complete -C\"maqet sta\"' | grep -q '^start'"
fi
check "dpkg --purge removes it" dpkg --purge maqet
installed_by_us=0
leftovers=$(while read -r f; do if [[ -e $f ]]; then echo "$f"; fi; done <"$work/deb-files")
check "nothing of the package is left" test -z "$leftovers"

echo
echo "package: $passed passed, $failed failed"
((failed == 0))
