#!/bin/sh
# Make `prometheus` and `promtool` available for the metrics tests (tests/test_prometheus.py)
# and `make prometheus`: Debian's package, installed with apt-get when missing and we are root.
# Prints the directory holding both binaries on success; exits non-zero with the reason else.
set -u
if [ -e /.runtime-observer-complete ]; then  # tools/sid_chroot.sh's chroot, shared and cached
    echo "not installing prometheus into the 3.14/3.15 test chroot (the host's run covers it)" >&2
    exit 1
fi
have() { command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; }
if ! have; then
    if [ "$(id -u)" != 0 ]; then
        echo "prometheus is not installed and we are not root to apt-get install it" >&2
        exit 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "prometheus is not installed and there is no apt-get to install it" >&2
        exit 1
    fi
    # --no-install-recommends: the server and promtool only, not the node exporter & co.
    # policy-rc.d 101: the package must not start a system-wide service of its own.
    policy=/usr/sbin/policy-rc.d
    made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus \
        >/tmp/install_prometheus.log 2>&1 \
        || { apt-get update -q >>/tmp/install_prometheus.log 2>&1 \
             && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
                prometheus >>/tmp/install_prometheus.log 2>&1; }
    status=$?
    [ "$made_policy" = 1 ] && rm -f "$policy"
    if [ "$status" != 0 ] || ! have; then
        echo "apt-get install prometheus failed (see /tmp/install_prometheus.log)" >&2
        exit 1
    fi
fi
dirname "$(command -v prometheus)"
