#!/usr/bin/env bash
# Makes virtiofsd available to the test session (as root): `shares:` need it.
# Found on PATH or in /usr/libexec: done. Else the distribution's package
# where it has one (Debian 13, Ubuntu, Fedora), else a build of the crate
# from crates.io (Debian 12 packages no virtiofsd) into a cache outside the
# clone, /opt/maqet-virtiofsd (MAQET_VIRTIOFSD_CACHE), linked into
# /usr/local/bin so the user manager's PATH finds it. The build needs cargo,
# libseccomp-dev and libcap-ng-dev (install-deps.sh installs them) and takes
# ~2 minutes on two cores; later runs find the cached binary.
set -euo pipefail

VERSION=1.14.0
cache=${MAQET_VIRTIOFSD_CACHE:-/opt/maqet-virtiofsd}
link=/usr/local/bin/virtiofsd

log() { printf 'virtiofsd: %s\n' "$*" >&2; }

for p in "$(command -v virtiofsd || true)" /usr/libexec/virtiofsd /usr/lib/virtiofsd; do
    if [[ -n $p && -x $p ]]; then
        exit 0
    fi
done
if [[ $(id -u) -ne 0 ]]; then
    log "not found on PATH or in /usr/libexec; run $0 as root to install or build it"
    exit 1
fi
if [[ ! -x $cache/bin/virtiofsd ]]; then
    if apt-cache show virtiofsd >/dev/null 2>&1; then
        log "installing the package"
        DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=600 install -y --no-install-recommends virtiofsd >&2
        exit 0
    fi
    cargo=$(command -v cargo || echo "${CARGO_HOME:-$HOME/.cargo}/bin/cargo")
    [[ -x $cargo ]] || { log "no package and no cargo to build it with"; exit 1; }
    log "building virtiofsd $VERSION from crates.io into $cache (a few minutes)"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    # Its own target directory: nothing of the clone's is touched.
    CARGO_TARGET_DIR=$work/target "$cargo" install --quiet --locked virtiofsd --version "$VERSION" --root "$work/root" >&2
    mkdir -p "$cache/bin"
    install -m 0755 "$work/root/bin/virtiofsd" "$cache/bin/virtiofsd.new"
    mv "$cache/bin/virtiofsd.new" "$cache/bin/virtiofsd"
fi
chmod -R a+rX "$cache"
ln -sfn "$cache/bin/virtiofsd" "$link"
log "$link -> $cache/bin/virtiofsd"
