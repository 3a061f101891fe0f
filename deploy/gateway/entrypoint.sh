#!/bin/sh
# Entrypoint of the postern-gateway container. Also runs outside a container (on a host or
# inside a network namespace, as the end-to-end tests do).
#
# Configured only by environment variables: every POSTERN_* variable the gateway reads (see
# `postern-gateway --help`) plus these for the script itself:
#
#   POSTERN_GATEWAY_BIN  the gateway binary (default /usr/local/bin/postern-gateway)
#   POSTERN_RUN_AS       the user to run the gateway as when started as root (default
#                        `postern`; empty, or a user that does not exist, keeps the current
#                        user)
#
# Split of privileged work: this script, while still root, makes sure /dev/net/tun exists,
# turns on IP forwarding (unless POSTERN_MASQUERADE is false) and prepares the state
# directory. It then drops to POSTERN_RUN_AS keeping only CAP_NET_ADMIN (ambient, no new
# privileges). The gateway itself creates the TUN device, installs the nftables masquerade
# rule in its own table `inet postern_<tun>` and deletes that table when it exits.
set -eu

bin="${POSTERN_GATEWAY_BIN:-/usr/local/bin/postern-gateway}"
run_as="${POSTERN_RUN_AS-postern}"
state_dir="${POSTERN_STATE_DIR:-/var/lib/postern-gateway}"
network="${POSTERN_TUNNEL_NETWORK:-100.64.0.0/10}"

log() { echo "postern-gateway-entrypoint: $*" >&2; }

# An empty variable (e.g. compose's `${POSTERN_TOKEN:-}`) means "not set".
for var in $(env | sed -n 's/^\(POSTERN_[A-Z0-9_]*\)=$/\1/p'); do
    unset "$var"
done

if [ ! -x "$bin" ]; then
    log "the gateway binary $bin is missing or not executable (set POSTERN_GATEWAY_BIN)"
    exit 1
fi

if [ ! -c /dev/net/tun ]; then
    mkdir -p /dev/net
    if ! mknod -m 0666 /dev/net/tun c 10 200 2>/dev/null; then
        log "/dev/net/tun is missing; pass the device (compose: devices: [/dev/net/tun])"
        exit 1
    fi
fi

case "${POSTERN_MASQUERADE:-true}" in
    false | False | FALSE | 0 | no | off) ;;
    *)
        case "$network" in
            *:*) forward=/proc/sys/net/ipv6/conf/all/forwarding ;;
            *) forward=/proc/sys/net/ipv4/ip_forward ;;
        esac
        if [ "$(cat "$forward" 2>/dev/null || echo 0)" != 1 ]; then
            # Read-only /proc/sys (a container without the sysctl set) is reported by the
            # gateway with a clear error; do not fail here.
            echo 1 2>/dev/null >"$forward" || log "could not enable forwarding in $forward"
        fi
        ;;
esac

switch=""
if [ "$(id -u)" = 0 ] && [ -n "$run_as" ] && id "$run_as" >/dev/null 2>&1; then
    switch=yes
fi

mkdir -p "$state_dir"
if [ -n "$switch" ]; then
    chown "$run_as:" "$state_dir"
fi
chmod 0700 "$state_dir"

if [ -n "$switch" ]; then
    exec setpriv --reuid="$(id -u "$run_as")" --regid="$(id -g "$run_as")" --init-groups \
        --inh-caps=-all,+net_admin --ambient-caps=-all,+net_admin --no-new-privs \
        -- "$bin" "$@"
fi
exec "$bin" "$@"
