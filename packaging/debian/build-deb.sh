#!/usr/bin/env bash
# Builds the Debian package (`make deb`) and prints its path.
#
# The package is `dpkg-deb --build` of the tree that `make install
# DESTDIR=… PREFIX=/usr` lays out, not a dpkg-buildpackage source package:
# debian/rules would run cargo under dpkg-buildpackage's environment, which
# wants Debian's rustc and packaged crates, while maqet builds with the
# rustup toolchain and crates.io (Cargo.lock). The file list is therefore
# exactly the Makefile's — the one the RPM spec and the PKGBUILD use too —
# except that zsh completions go where Debian's zsh looks for them.
#
# Environment: PROFILE=release|debug (default release), CARGOFLAGS (passed to
# cargo), DEB_OUT_DIR (default target/).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

profile=${PROFILE:-release}
out_dir=${DEB_OUT_DIR:-${CARGO_TARGET_DIR:-target}}
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
arch=$(dpkg --print-architecture)
[[ -n $version ]] || { echo "build-deb: no version in Cargo.toml" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# dpkg-shlibdeps wants the staged tree at debian/PACKAGE of a source tree.
root=$work/debian/maqet
make --no-print-directory install PROFILE="$profile" CARGOFLAGS="${CARGOFLAGS:-}" \
    DESTDIR="$root" PREFIX=/usr ZSHCOMPDIR=/usr/share/zsh/vendor-completions >&2
install -m 644 packaging/debian/copyright "$root/usr/share/doc/maqet/copyright"
# Debian policy: no debugging information in shipped binaries (a debug
# build's would be most of the package).
strip --strip-debug "$root/usr/bin/maqet" "$root/usr/bin/maqet-runner"

printf 'Source: maqet\n\nPackage: maqet\nArchitecture: any\n' >"$work/debian/control"
shlibs=$(cd "$work" && dpkg-shlibdeps -O -edebian/maqet/usr/bin/maqet -edebian/maqet/usr/bin/maqet-runner \
    2> >(grep -v 'should already be installed' >&2) | sed -n 's/^shlibs:Depends=//p')
[[ -n $shlibs ]] || { echo "build-deb: dpkg-shlibdeps found no dependencies" >&2; exit 1; }

mkdir -p "$root/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@INSTALLED_SIZE@/$size/" \
    -e "s/@SHLIBS@/$shlibs/" packaging/debian/control.in >"$root/DEBIAN/control"
(cd "$root" && find usr -type f -print0 | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"

mkdir -p "$out_dir"
deb=$out_dir/maqet_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
echo "$deb"
