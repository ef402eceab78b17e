#!/usr/bin/env bash
# A minimal Debian unstable (sid) chroot that supplies CPython 3.14 and 3.15 for
# `make test-matrix` (tools/matrix.py), built once and cached outside the checkout.
#
#   tools/sid_chroot.sh build          build it if missing, half-built or its recipe changed
#   tools/sid_chroot.sh check          exit 0 if built and complete, else say why (one line)
#   tools/sid_chroot.sh run CMD ARG…   run CMD inside it in /src (the checkout), clean env
#
# Environment: RUNTIME_OBSERVER_CHROOT (default /var/cache/runtime-observer/sid),
# SID_MIRROR (default: the Debian mirror in this machine's apt sources).
#
# Mounts: `run` enters a private mount namespace (unshare) before it mounts /proc, /dev,
# /sys and the checkout, so the host never sees them and they all disappear when the
# command exits, however it exits (error, Ctrl-C, kill): the host's /proc, /dev and the
# checkout are never touched, and `rm -rf` of the chroot can never reach them.
set -euo pipefail

ROOT="${RUNTIME_OBSERVER_CHROOT:-/var/cache/runtime-observer/sid}"
STAMP="$ROOT/.runtime-observer-complete"
HOST_CA=/etc/ssl/certs/ca-certificates.crt
CHROOT_CA=/etc/ssl/certs/host-ca-certificates.crt
SRC="$(cd "$(dirname "$0")/.." && pwd)"
case "$ROOT" in
/?*) ;;
*)
    echo "sid chroot: RUNTIME_OBSERVER_CHROOT must be an absolute path, not '$ROOT'" >&2
    exit 64
    ;;
esac

# What the chroot holds. Changing either list changes the recipe, which rebuilds it.
BOOTSTRAP_PKGS="python3,python3-venv,python3-pip,python3.14,python3.14-venv,python3.15,python3.15-venv"
# Qt offscreen runtime for PyQt6, fonts (text metrics in GUI tests), `ip` for the
# network-namespace tests (they skip without it), ps for the process tests.
EXTRA_PKGS="libgl1 libglib2.0-0 libfontconfig1 libxkbcommon0 libdbus-1-3 libegl1 fonts-dejavu-core iproute2 procps"
RECIPE="v2 $BOOTSTRAP_PKGS $EXTRA_PKGS"

say() { echo "sid chroot: $*" >&2; }

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        say "unavailable: needs root (debootstrap, chroot and mounts)"
        exit 2
    fi
}

# The Debian mirror this machine already uses (deb822 .sources or one-line .list).
host_mirror() {
    if [ -n "${SID_MIRROR:-}" ]; then
        echo "$SID_MIRROR"
        return
    fi
    local uri
    uri="$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
        awk '/^URIs:/ {for (i = 2; i <= NF; i++) print $i}' |
        grep -E '/debian/?$' | head -n1 || true)"
    if [ -z "$uri" ]; then
        uri="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
            awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^(https?|file):/) {print $i; break}}' |
            grep -E '/debian/?$' | head -n1 || true)"
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

is_complete() {
    [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$RECIPE" ]
}

# Refuse to delete a directory something is mounted under (in this mount namespace).
assert_unmounted() {
    if awk -v root="$ROOT" '$5 == root || index($5, root "/") == 1 {found = 1} END {exit !found}' \
        /proc/self/mountinfo; then
        say "refusing to delete $ROOT: something is mounted under it (see /proc/self/mountinfo)"
        exit 1
    fi
}

# Mount what a command inside needs; only ever called inside a private mount namespace.
mount_all() {
    # The chroot's / a mount point of its own: `ip netns exec` remounts it (--make-rslave).
    mount --bind "$ROOT" "$ROOT"
    mount -t proc proc "$ROOT/proc"
    mount --rbind /dev "$ROOT/dev"
    mount --rbind /sys "$ROOT/sys"
    mkdir -p "$ROOT/src"
    mount --bind "$SRC" "$ROOT/src"
    mount -t tmpfs tmpfs "$ROOT/run"
    cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
    mkdir -p "$(dirname "$ROOT$CHROOT_CA")"
    cp -L "$HOST_CA" "$ROOT$CHROOT_CA"
}

# Runs inside `unshare --mount --propagation private`: mounts, then chroots.
inner() {
    mount_all
    exec chroot "$ROOT" /usr/bin/env -i --chdir=/src \
        HOME=/root \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        LANG=C.UTF-8 \
        TERM="${TERM:-dumb}" \
        PIP_CERT="$CHROOT_CA" \
        SSL_CERT_FILE="$CHROOT_CA" \
        DEBIAN_FRONTEND=noninteractive \
        "$@"
}

in_chroot() {
    unshare --mount --propagation private -- "$0" __inner "$@"
}

build() {
    need_root
    if is_complete; then
        return 0
    fi
    mkdir -p "$(dirname "$ROOT")"
    exec 9>"$ROOT.lock"
    flock 9
    if is_complete; then # built by someone else while we waited
        return 0
    fi
    if ! command -v debootstrap >/dev/null; then
        say "installing debootstrap"
        if ! { apt-get update -qq && apt-get install -y -qq debootstrap; } >/dev/null; then
            say "unavailable: no debootstrap and apt-get could not install it"
            exit 2
        fi
    fi
    assert_unmounted
    rm -rf "$ROOT"
    local mirror
    mirror="$(host_mirror)"
    say "building in $ROOT from $mirror (once; about a minute)"
    if ! debootstrap --variant=minbase --include="$BOOTSTRAP_PKGS" sid "$ROOT" "$mirror" \
        >"$ROOT.build.log" 2>&1; then
        say "unavailable: debootstrap failed (see $ROOT.build.log; tail follows)"
        tail -n 5 "$ROOT.build.log" >&2
        exit 2
    fi
    # The mirror may serve a dated snapshot whose Release file has expired (this
    # machine's own apt accepts that too); the chroot only feeds a test run.
    echo 'Acquire::Check-Valid-Until "false";' >"$ROOT/etc/apt/apt.conf.d/99runtime-observer"
    # shellcheck disable=SC2086  # word splitting of the package list is intended
    if ! in_chroot sh -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends $EXTRA_PKGS" \
        >>"$ROOT.build.log" 2>&1; then
        say "unavailable: apt-get install in the chroot failed (see $ROOT.build.log)"
        tail -n 5 "$ROOT.build.log" >&2
        exit 2
    fi
    in_chroot sh -c 'apt-get clean'
    local v
    for v in 3.14 3.15; do
        if ! in_chroot "python$v" -c 'import venv, ensurepip, ssl, sqlite3' >>"$ROOT.build.log" 2>&1; then
            say "unavailable: python$v in the chroot lacks venv/ensurepip/ssl (see $ROOT.build.log)"
            exit 2
        fi
    done
    echo "$RECIPE" >"$STAMP"
    say "ready: $ROOT"
}

check() {
    need_root
    if ! is_complete; then
        say "not built (run: tools/sid_chroot.sh build)"
        exit 1
    fi
    if ! command -v unshare >/dev/null; then
        say "unavailable: no unshare (util-linux)"
        exit 2
    fi
}

case "${1:-}" in
build) build ;;
check) check ;;
run)
    shift
    [ "${1:-}" = "--" ] && shift
    need_root
    is_complete || {
        say "not built (run: tools/sid_chroot.sh build)"
        exit 2
    }
    in_chroot "$@"
    ;;
__inner)
    shift
    inner "$@"
    ;;
*)
    echo "usage: $0 build | check | run CMD [ARG...]" >&2
    exit 64
    ;;
esac
