#!/usr/bin/env bash
# A reproduction of an upstream wireguard-go bug, kept because it explains why
# netns-interop.sh step 2 (IPv4 endpoints, then IPv6 endpoints) fails against
# the current Go-module wireguard-go while it passes against Debian's build and
# against omni-daemon: two *wireguard-go* instances, no omni-daemon involved,
# fail the same sequence.
#
# After a peer has sent over IPv4, its next send to an IPv6 endpoint goes to a
# mangled address (e.g. fd00:241:: instead of fd00:241::1: the pooled
# *net.UDPAddr in conn/bind_std.go keeps a 4-byte IP slice from the IPv4 send,
# so only the first 4 bytes of the IPv6 address are copied). The handshake
# response never arrives; tcpdump shows neighbour solicitations for the mangled
# address. Exit status 0 = the bug reproduced, 1 = this wireguard-go is fixed.
#
#   wireguard-go-v4-then-v6.sh [WIREGUARD_GO_BINARY]   (default: ~/go/bin/wireguard)
# Needs root, wireguard-tools, iproute2. Removes what it creates on every exit.
set -uo pipefail
WGGO="${1:-$HOME/go/bin/wireguard}"
[ -x "$WGGO" ] || { echo "no wireguard-go binary at $WGGO" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 2; }
A="wgrepro-a-$$"
B="wgrepro-b-$$"
TMP=$(mktemp -d)
cleanup() {
    for ns in "$A" "$B"; do ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null; done
    sleep 0.3
    for ns in "$A" "$B"; do ip netns del "$ns" 2>/dev/null; done
    rm -rf "$TMP"
}
trap cleanup EXIT
ip netns add "$A"
ip netns add "$B"
ip link add "ra$$" netns "$A" type veth peer name "rb$$" netns "$B"
for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
ip -n "$A" addr add 192.168.241.1/24 dev "ra$$"
ip -n "$A" addr add fd00:241::1/64 dev "ra$$" nodad
ip -n "$B" addr add 192.168.241.2/24 dev "rb$$"
ip -n "$B" addr add fd00:241::2/64 dev "rb$$" nodad
ip -n "$A" link set "ra$$" up
ip -n "$B" link set "rb$$" up
export WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1
ip netns exec "$A" "$WGGO" -f wgra >"$TMP/a.log" 2>&1 &
ip netns exec "$B" "$WGGO" -f wgrb >"$TMP/b.log" 2>&1 &
timeout 10 bash -c 'until [ -S /var/run/wireguard/wgra.sock ] && [ -S /var/run/wireguard/wgrb.sock ]; do sleep 0.1; done'
umask 077
wg genkey >"$TMP/a"
wg genkey >"$TMP/b"
wg genpsk >"$TMP/psk"
PA=$(wg pubkey <"$TMP/a")
PB=$(wg pubkey <"$TMP/b")
ip netns exec "$A" wg set wgra private-key "$TMP/a" listen-port 51820 peer "$PB" endpoint 192.168.241.2:51821 allowed-ips 10.241.0.2/32
ip netns exec "$B" wg set wgrb private-key "$TMP/b" listen-port 51821 peer "$PA" endpoint 192.168.241.1:51820 allowed-ips 10.241.0.1/32
ip -n "$A" addr add 10.241.0.1/24 dev wgra
ip -n "$A" link set wgra up
ip -n "$B" addr add 10.241.0.2/24 dev wgrb
ip -n "$B" link set wgrb up
ip netns exec "$A" ping -c 2 -W 2 10.241.0.2 >/dev/null || { echo "IPv4 endpoints did not work at all" >&2; exit 2; }
echo "IPv4 endpoints: ok"
# Now the netns-interop step 2 sequence: A forgets B; both switch to IPv6 endpoints.
ip netns exec "$A" wg set wgra peer "$PB" remove
ip netns exec "$B" wg set wgrb peer "$PA" endpoint "[fd00:241::1]:51820" preshared-key "$TMP/psk"
ip netns exec "$A" wg set wgra peer "$PB" endpoint "[fd00:241::2]:51821" allowed-ips 10.241.0.2/32 \
    persistent-keepalive 25 preshared-key "$TMP/psk"
if ip netns exec "$A" ping -c 3 -W 4 10.241.0.2 >/dev/null; then
    echo "IPv6 endpoints after IPv4: ok (this wireguard-go does not have the bug)"
    exit 1
fi
echo "IPv6 endpoints after IPv4: no handshake (the upstream bug reproduced)"
exit 0
