#!/usr/bin/env bash
# omni-daemon against a real peer across two network namespaces joined by a
# veth pair, configured only with stock tools (wg, ip). Needs root,
# wireguard-tools, iproute2, socat (and wireguard-go / iperf3 for those parts).
#
#   netns-interop.sh [wireguard-go|omni-daemon] [--bulk]
#
# Peer B is wireguard-go (default) or a second omni-daemon (started without
# -f, so detaching is tested too). Checks: handshake and ping both ways over
# the IPv4 and IPv6 overlay, first with IPv4 then with IPv6 endpoints; `wg
# show` endpoints / latest-handshakes / transfer; bad UAPI input answers a
# non-zero errno and the daemon keeps serving; the interface moved to a third
# namespace keeps working (its UDP socket stays behind) and follows MTU
# changes; `ip -s link` counts the packets; deleting the interface makes
# omni-daemon exit and remove its socket; wg-quick brings an interface up and
# down with WG_QUICK_USERSPACE_IMPLEMENTATION=omni-daemon; SIGTERM stops a
# detached daemon cleanly.
# --bulk adds: a 100 MB iperf3 TCP transfer each way, a UDP transfer, and
# `wg setconf` with 131072 allowed IPs on one peer read back exactly.
#
# Everything it creates has a unique name and is removed on every exit path;
# every wait is bounded.
set -euo pipefail

PEER_KIND="${1:-wireguard-go}"
BULK=0
[ "${2:-}" = "--bulk" ] && BULK=1
case "$PEER_KIND" in
wireguard-go | omni-daemon) ;;
*)
    echo "usage: $0 [wireguard-go|omni-daemon] [--bulk]" >&2
    exit 2
    ;;
esac

cd "$(dirname "$0")/../.."
ROOT=$PWD
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac

if [ "$(id -u)" != 0 ]; then
    echo "needs root (network namespaces, TUN)" >&2
    exit 1
fi
for tool in wg ip socat timeout; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 1; }
done
# WIREGUARD_GO picks another wireguard-go binary (e.g. the Go module's
# ~/go/bin/wireguard). Note: the current upstream build fails step 2 (IPv6
# endpoints after IPv4 ones) because of its own bug, reproduced without
# omni-daemon by tests/upstream/wireguard-go-v4-then-v6.sh.
WIREGUARD_GO="${WIREGUARD_GO:-wireguard-go}"
[ "$PEER_KIND" = wireguard-go ] && { command -v "$WIREGUARD_GO" >/dev/null || { echo "missing $WIREGUARD_GO" >&2; exit 1; }; }
[ "$BULK" = 1 ] && { command -v iperf3 >/dev/null || { echo "missing iperf3" >&2; exit 1; }; }

if [ -z "${OMNI_DAEMON:-}" ]; then
    cargo build -q --release -p omni-daemon
    OMNI_DAEMON="$TARGET_DIR/release/omni-daemon"
fi

ID=$$
NS_A="omni-a-$ID"
NS_B="omni-b-$ID"
NS_C="omni-c-$ID"
IF_A="oma$ID"
IF_B="omb$ID"
IF_X="omx$ID"
IF_Q="omq$ID"
VETH_A="va$ID"
VETH_B="vb$ID"
SOCK_DIR=/var/run/wireguard
TMP=$(mktemp -d)
PID_A=""
PID_B=""

log() { echo "[$(date +%T)] $*"; }
fail() {
    echo "FAIL: $*" >&2
    exit 1
}

cleanup() {
    local rc=$?
    set +e
    trap - EXIT
    if [ "$rc" != 0 ]; then
        for f in "$TMP"/*.log; do
            [ -f "$f" ] || continue
            echo "----- $f (last 40 lines)"
            tail -n 40 "$f"
        done
    fi
    # Only processes this script started live in these namespaces.
    for ns in "$NS_A" "$NS_B" "$NS_C"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill "$pid" 2>/dev/null
        done
    done
    for pid in $PID_A $PID_B; do
        kill "$pid" 2>/dev/null
    done
    sleep 0.3
    for ns in "$NS_A" "$NS_B" "$NS_C"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill -9 "$pid" 2>/dev/null
        done
        ip netns del "$ns" 2>/dev/null
    done
    rm -f "$SOCK_DIR/$IF_A.sock" "$SOCK_DIR/$IF_B.sock" "$SOCK_DIR/$IF_X.sock" "$SOCK_DIR/$IF_Q.sock"
    rm -rf "$TMP"
    if [ "$rc" = 0 ]; then
        echo "netns-interop ($PEER_KIND): all checks passed"
    else
        echo "netns-interop ($PEER_KIND): FAILED" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Every command that talks to a daemon is bounded, so a hung daemon fails
# the test instead of hanging it.
in_a() { timeout 60 ip netns exec "$NS_A" "$@"; }
in_b() { timeout 60 ip netns exec "$NS_B" "$@"; }
in_c() { timeout 60 ip netns exec "$NS_C" "$@"; }
WG_BIN=$(command -v wg)
wg() { timeout 60 "$WG_BIN" "$@"; }

# True while the process exists and is not a zombie.
alive() {
    [ -e "/proc/$1" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

wait_socket() {
    timeout 10 bash -c "until [ -S '$SOCK_DIR/$1.sock' ]; do sleep 0.05; done" ||
        fail "no UAPI socket for $1"
}

# uapi IFNAME REQUEST: sends a raw UAPI request, prints the answer.
uapi() {
    printf '%b' "$2" | timeout 5 socat -t 2 - "UNIX-CONNECT:$SOCK_DIR/$1.sock"
}

ping_ok() { # ping_ok NS ADDR [extra ping args]
    local ns=$1 addr=$2
    shift 2
    timeout 20 ip netns exec "$ns" ping -c 3 -i 0.2 -W 3 "$@" "$addr" >"$TMP/ping.out" 2>&1 ||
        { cat "$TMP/ping.out"; fail "ping $addr from $ns"; }
    grep -q ' 0% packet loss' "$TMP/ping.out" || { cat "$TMP/ping.out"; fail "ping $addr from $ns lost packets"; }
}

# udp_stats NS LABEL: the UDP counters that reveal drops (diagnostics only).
udp_stats() {
    ip netns exec "$1" awk -v who="$2" '/^Udp6(InDatagrams|RcvbufErrors|SndbufErrors|OutDatagrams)/ { s = s " " $1 "=" $2 }
        END { print "    " who ":" s }' /proc/net/snmp6
}

pings_both_ways() {
    ping_ok "$NS_A" 10.241.0.2
    ping_ok "$NS_B" 10.241.0.1
    ping_ok "$NS_A" fd00:aa::2
    ping_ok "$NS_B" fd00:aa::1
}

# check_show IF PEER_PUB EXPECTED_ENDPOINT: wg show output is sane.
check_show() {
    local ifname=$1 peer=$2 endpoint=$3 line now ts rx tx
    line=$(wg show "$ifname" endpoints)
    [ "$line" = "$peer	$endpoint" ] || fail "$ifname endpoints: got '$line', want '$peer	$endpoint'"
    line=$(wg show "$ifname" latest-handshakes)
    ts=${line##*	}
    now=$(date +%s)
    [ "${line%%	*}" = "$peer" ] || fail "$ifname latest-handshakes: '$line'"
    [ "$ts" -gt $((now - 120)) ] && [ "$ts" -le $((now + 5)) ] ||
        fail "$ifname latest handshake $ts is not recent (now $now)"
    line=$(wg show "$ifname" transfer)
    read -r _ rx tx <<<"$line"
    [ "$rx" -gt 0 ] && [ "$tx" -gt 0 ] || fail "$ifname transfer: '$line'"
    log "$ifname: endpoint $endpoint, handshake $((now - ts)) s ago, rx $rx B, tx $tx B"
}

start_peer_b() {
    if [ "$PEER_KIND" = wireguard-go ]; then
        ip netns exec "$NS_B" env WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 LOG_LEVEL=debug \
            "$WIREGUARD_GO" -f "$IF_B" >"$TMP/b.log" 2>&1 &
        PID_B=$!
    else
        # Without -f: the daemon detaches once the interface and socket exist.
        ip netns exec "$NS_B" "$OMNI_DAEMON" --log-level debug "$IF_B" 2>"$TMP/b.log" ||
            fail "omni-daemon $IF_B did not start"
        [ -S "$SOCK_DIR/$IF_B.sock" ] || fail "the UAPI socket must exist when the parent returns"
        PID_B=$(ip netns pids "$NS_B" | head -n 1)
    fi
}

log "namespaces $NS_A, $NS_B; peer B is $PEER_KIND; omni-daemon is $OMNI_DAEMON"
ip netns add "$NS_A"
ip netns add "$NS_B"
ip link add "$VETH_A" netns "$NS_A" type veth peer name "$VETH_B" netns "$NS_B"
in_a ip link set lo up
in_b ip link set lo up
in_a ip addr add 192.168.241.1/24 dev "$VETH_A"
in_a ip addr add fd00:241::1/64 dev "$VETH_A" nodad
in_b ip addr add 192.168.241.2/24 dev "$VETH_B"
in_b ip addr add fd00:241::2/64 dev "$VETH_B" nodad
in_a ip link set "$VETH_A" up
in_b ip link set "$VETH_B" up

umask 077
wg genkey >"$TMP/a.key"
wg genkey >"$TMP/b.key"
PUB_A=$(wg pubkey <"$TMP/a.key")
PUB_B=$(wg pubkey <"$TMP/b.key")

ip netns exec "$NS_A" "$OMNI_DAEMON" -f --log-level debug "$IF_A" >"$TMP/a.log" 2>&1 &
PID_A=$!
start_peer_b
wait_socket "$IF_A"
wait_socket "$IF_B"
log "daemons up: A pid $PID_A, B pid $PID_B"

# A is configured with `wg set`, B with `wg setconf`.
in_a wg set "$IF_A" private-key "$TMP/a.key" listen-port 51820 \
    peer "$PUB_B" endpoint 192.168.241.2:51821 allowed-ips 10.241.0.2/32,fd00:aa::2/128
cat >"$TMP/b.conf" <<EOF
[Interface]
PrivateKey = $(cat "$TMP/b.key")
ListenPort = 51821

[Peer]
PublicKey = $PUB_A
AllowedIPs = 10.241.0.1/32, fd00:aa::1/128
Endpoint = 192.168.241.1:51820
EOF
in_b wg setconf "$IF_B" "$TMP/b.conf"
[ "$(wg show "$IF_A" listen-port)" = 51820 ] || fail "listen-port"
[ "$(wg show "$IF_A" public-key)" = "$PUB_A" ] || fail "public-key"
[ "$(wg show "$IF_A" private-key)" = "$(cat "$TMP/a.key")" ] || fail "private-key read back"
# Configured but without traffic or timers, the data plane must sleep (no
# periodic tick): its thread is not woken while nothing happens.
wakeups() { awk '/^voluntary_ctxt_switches/ { print $2 }' "/proc/$PID_A/task/$PID_A/status"; }
w0=$(wakeups)
sleep 2
w1=$(wakeups)
log "idle data plane: $((w1 - w0)) wake-ups in 2 s"
[ $((w1 - w0)) -le 1 ] || fail "idle omni-daemon woke up $((w1 - w0)) times in 2 s"
in_a ip addr add 10.241.0.1/24 dev "$IF_A"
in_a ip addr add fd00:aa::1/64 dev "$IF_A" nodad
in_a ip link set "$IF_A" up
in_b ip addr add 10.241.0.2/24 dev "$IF_B"
in_b ip addr add fd00:aa::2/64 dev "$IF_B" nodad
in_b ip link set "$IF_B" up

log "1. IPv4 endpoints: ping both ways over IPv4 and IPv6"
pings_both_ways
check_show "$IF_A" "$PUB_B" 192.168.241.2:51821
check_show "$IF_B" "$PUB_A" 192.168.241.1:51820
wg showconf "$IF_A" | grep -q "^Endpoint = 192.168.241.2:51821$" || fail "showconf"
in_a wg set "$IF_A" fwmark 0x77
[ "$(wg show "$IF_A" fwmark)" = 0x77 ] || fail "fwmark"
ping_ok "$NS_A" 10.241.0.2
in_a wg set "$IF_A" fwmark off
[ "$(wg show "$IF_A" fwmark)" = off ] || fail "fwmark off"

log "2. IPv6 endpoints and a preshared key (A forgets the peer, so a fresh handshake runs over IPv6)"
wg genpsk >"$TMP/psk"
in_a wg set "$IF_A" peer "$PUB_B" remove
[ -z "$(wg show "$IF_A" peers)" ] || fail "peer not removed"
in_b wg set "$IF_B" peer "$PUB_A" endpoint "[fd00:241::1]:51820" preshared-key "$TMP/psk"
in_a wg set "$IF_A" peer "$PUB_B" endpoint "[fd00:241::2]:51821" allowed-ips 10.241.0.2/32,fd00:aa::2/128 \
    persistent-keepalive 25 preshared-key "$TMP/psk"
[ "$(wg show "$IF_A" preshared-keys)" = "$PUB_B	$(cat "$TMP/psk")" ] || fail "preshared key read back"
# Enabling persistent keepalive sends one at once: with no session yet, that
# is a handshake, which completes without any traffic.
timeout 5 bash -c "until [ \"\$(wg show '$IF_A' latest-handshakes | cut -f2)\" != 0 ]; do sleep 0.1; done" ||
    fail "no handshake from enabling persistent keepalive"
pings_both_ways
check_show "$IF_A" "$PUB_B" "[fd00:241::2]:51821"
check_show "$IF_B" "$PUB_A" "[fd00:241::1]:51820"
[ "$(wg show "$IF_A" persistent-keepalive)" = "$PUB_B	25" ] || fail "persistent-keepalive"

log "3. bad UAPI input answers a non-zero errno; the daemon keeps serving"
check_errno() { # check_errno REQUEST WANT
    local answer
    answer=$(uapi "$IF_A" "$1") || true
    echo "$answer" | grep -q "^errno=$2\$" || fail "request $(printf '%q' "$1") answered '$answer', want errno=$2"
}
check_errno 'set=1\nno_such_key=1\n\n' 22
check_errno 'set=1\nprivate_key=not-a-key\n\n' 22
check_errno "set=1\npublic_key=$(printf '%s' "$PUB_B")\n\n" 22 # base64 where UAPI wants hex
check_errno "set=1\npublic_key=$(printf '%064d' 1)\nendpoint=not-an-endpoint\n\n" 22
check_errno "set=1\npublic_key=$(printf '%064d' 1)\nendpoint=192.168.241.2:99999\n\n" 22
check_errno "set=1\npublic_key=$(printf '%064d' 1)\nallowed_ip=10.0.0.0/40\n\n" 22
check_errno 'set=1\nlisten_port=notaport\n\n' 22
check_errno 'set=1\nlisten_port\n\n' 71
uapi "$IF_A" 'nonsense=1\n\n' >/dev/null || true # closes the connection
# Several operations on one connection, the first bad.
answer=$(uapi "$IF_A" 'set=1\nbogus=1\n\nget=1\n\n')
[ "$(echo "$answer" | grep -c '^errno=')" = 2 ] || fail "two answers expected on one connection: $answer"
echo "$answer" | grep -q "^listen_port=51820$" || fail "get after a bad set"
alive "$PID_A" || fail "omni-daemon died on bad input"
[ "$(wg show "$IF_A" peers)" = "$PUB_B" ] || fail "bad input changed the configuration"
[ "$(wg show "$IF_A" endpoints)" = "$PUB_B	[fd00:241::2]:51821" ] || fail "bad input changed the endpoint"
ping_ok "$NS_A" 10.241.0.2

if [ "$BULK" = 1 ]; then
    log "4a. iperf3: 100 MB over TCP each way, then UDP"
    in_b iperf3 -s -B 10.241.0.2 -p 5201 >"$TMP/iperf-server.log" 2>&1 &
    timeout 10 bash -c "until ip netns exec '$NS_B' ss -ltn | grep -q ':5201 '; do sleep 0.1; done" ||
        fail "iperf3 server did not start"
    timeout 180 ip netns exec "$NS_A" iperf3 -c 10.241.0.2 -p 5201 -n 100M >"$TMP/iperf-tcp.log" 2>&1 ||
        { cat "$TMP/iperf-tcp.log"; fail "iperf3 TCP A->B"; }
    grep -E 'sender|receiver' "$TMP/iperf-tcp.log"
    udp_stats "$NS_A" A
    udp_stats "$NS_B" B
    in_a ip -s link show dev "$IF_A" | sed -n '/TX:/{n;p}' | awk '{ print "    A tunnel TX packets " $2 ", dropped " $4 }'
    timeout 180 ip netns exec "$NS_A" iperf3 -c 10.241.0.2 -p 5201 -n 100M -R >"$TMP/iperf-tcp-r.log" 2>&1 ||
        { cat "$TMP/iperf-tcp-r.log"; fail "iperf3 TCP B->A"; }
    grep -E 'sender|receiver' "$TMP/iperf-tcp-r.log"
    # A UDP transfer through the tunnel: 1300-byte datagrams at 50 Mbit/s
    # for 3 s must arrive (loss < 50 % in one of two runs; both are printed).
    # The bound is loose on purpose: on this shared 2-core VM the loss swings
    # with CPU steal, not with the code (0-1.8 % on a quiet host; 35-59 % in
    # one CI run whose TCP throughput was a third of normal), because a starved
    # receiver (iperf3's socket, Debian wireguard-go's one-datagram reads)
    # overflows its buffer. Integrity and throughput are the TCP transfers' job.
    udp_ok=0
    for attempt in 1 2; do
        timeout 60 ip netns exec "$NS_A" iperf3 -c 10.241.0.2 -p 5201 -u -b 50M -t 3 -l 1300 >"$TMP/iperf-udp.log" 2>&1 ||
            { cat "$TMP/iperf-udp.log"; fail "iperf3 UDP"; }
        line=$(grep receiver "$TMP/iperf-udp.log" | tail -n 1)
        echo "$line"
        loss=$(echo "$line" | sed -n 's/.*(\([0-9.e+-]*\)%).*/\1/p')
        [ -n "$loss" ] || fail "no UDP result"
        if awk -v l="$loss" 'BEGIN { exit !(l < 50) }'; then
            udp_ok=1
            break
        fi
        log "UDP run $attempt lost $loss %"
    done
    [ "$udp_ok" = 1 ] || fail "UDP loss '$loss'% too high in both runs"
    ping_ok "$NS_B" 10.241.0.1

    log "4b. wg setconf with 131072 allowed IPs on one peer, read back exactly"
    ip netns exec "$NS_A" "$OMNI_DAEMON" -f "$IF_X" >"$TMP/x.log" 2>&1 &
    PID_X=$!
    wait_socket "$IF_X"
    awk 'BEGIN { for (i = 0; i < 65536; i++) printf "10.%d.%d.0/24\nfd00:%x:%x::/48\n", int(i / 256), i % 256, int(i / 256) + 1, i % 256 + 1 }' |
        sort >"$TMP/ips.want"
    {
        printf '[Interface]\nPrivateKey = %s\n\n[Peer]\nPublicKey = %s\n' "$(wg genkey)" "$PUB_B"
        sed 's/^/AllowedIPs = /' "$TMP/ips.want"
    } >"$TMP/x.conf"
    start=$(date +%s.%N)
    timeout 120 wg setconf "$IF_X" "$TMP/x.conf" || fail "setconf with 131072 allowed IPs"
    timeout 120 wg show "$IF_X" allowed-ips >"$TMP/ips.show" || fail "show allowed-ips"
    end=$(date +%s.%N)
    cut -f2 "$TMP/ips.show" | tr ' ' '\n' | sed '/^$/d' | sort >"$TMP/ips.got"
    cmp -s "$TMP/ips.want" "$TMP/ips.got" ||
        fail "allowed IPs differ: want $(wc -l <"$TMP/ips.want"), got $(wc -l <"$TMP/ips.got")"
    log "131072 allowed IPs set and read back in $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }') s"
    in_a ip link del "$IF_X"
    timeout 10 bash -c "while [ -e /proc/$PID_X ] && ! grep -q '^State:[[:space:]]*Z' /proc/$PID_X/status; do sleep 0.1; done" ||
        fail "second daemon did not exit"
fi

log "5. move A's interface to a third namespace; its UDP socket stays in $NS_A"
ip netns add "$NS_C"
in_a ip link set "$IF_A" netns "$NS_C"
in_c ip link set lo up
in_c ip addr add 10.241.0.1/24 dev "$IF_A"
in_c ip addr add fd00:aa::1/64 dev "$IF_A" nodad
in_c ip link set "$IF_A" up
ping_ok "$NS_C" 10.241.0.2
ping_ok "$NS_C" fd00:aa::2
ping_ok "$NS_B" 10.241.0.1
ping_ok "$NS_B" fd00:aa::1
in_c ip link set "$IF_A" mtu 1280
timeout 10 bash -c "until grep -q 'MTU changed.*mtu=1280' '$TMP/a.log'; do sleep 0.1; done" ||
    fail "MTU change not followed"
ping_ok "$NS_C" 10.241.0.2 -s 1200
[ "$(wg show "$IF_A" endpoints)" = "$PUB_B	[fd00:241::2]:51821" ] || fail "endpoint after move"

log "6. ip -s link counts the tunnel's packets"
stats=$(in_c ip -s link show dev "$IF_A")
rx=$(echo "$stats" | awk '/RX:/ { getline; print $2; exit }')
tx=$(echo "$stats" | awk '/TX:/ { getline; print $2; exit }')
log "$IF_A: $rx packets received, $tx sent"
[ "$rx" -ge 12 ] && [ "$tx" -ge 12 ] || fail "ip -s link counters: rx=$rx tx=$tx"

log "7. deleting the interface stops omni-daemon and removes its socket"
in_c ip link del "$IF_A"
timeout 10 bash -c "while [ -e /proc/$PID_A ] && ! grep -q '^State:[[:space:]]*Z' /proc/$PID_A/status; do sleep 0.1; done" ||
    fail "omni-daemon still running after its interface was deleted"
wait "$PID_A" || fail "omni-daemon exited with status $?"
[ ! -e "$SOCK_DIR/$IF_A.sock" ] || fail "UAPI socket left behind"
grep -q "interface deleted" "$TMP/a.log" || fail "no exit message"

if command -v wg-quick >/dev/null; then
    log "8. wg-quick up/down with WG_QUICK_USERSPACE_IMPLEMENTATION=omni-daemon"
    wg genkey >"$TMP/q.key"
    PUB_Q=$(wg pubkey <"$TMP/q.key")
    cat >"$TMP/$IF_Q.conf" <<EOF
[Interface]
PrivateKey = $(cat "$TMP/q.key")
Address = 10.242.0.1/24, fd00:bb::1/64
ListenPort = 51830
MTU = 1380

[Peer]
PublicKey = $PUB_B
AllowedIPs = 10.242.0.2/32, fd00:bb::2/128
Endpoint = 192.168.241.2:51821
EOF
    in_b wg set "$IF_B" peer "$PUB_Q" allowed-ips 10.242.0.1/32,fd00:bb::1/128
    in_b ip addr add 10.242.0.2/24 dev "$IF_B"
    in_b ip addr add fd00:bb::2/64 dev "$IF_B" nodad
    timeout 30 ip netns exec "$NS_A" env WG_QUICK_USERSPACE_IMPLEMENTATION="$OMNI_DAEMON" RUST_LOG=info \
        wg-quick up "$TMP/$IF_Q.conf" >"$TMP/q.log" 2>&1 || { cat "$TMP/q.log"; fail "wg-quick up"; }
    PID_Q=$(ip netns pids "$NS_A" | head -n 1)
    ping_ok "$NS_A" 10.242.0.2
    ping_ok "$NS_B" fd00:bb::1
    [ "$(wg show "$IF_Q" listen-port)" = 51830 ] || fail "wg-quick: listen port"
    timeout 10 bash -c "until grep -q 'MTU changed.*mtu=1380' '$TMP/q.log'; do sleep 0.1; done" ||
        fail "wg-quick's MTU not followed"
    timeout 30 ip netns exec "$NS_A" wg-quick down "$TMP/$IF_Q.conf" >>"$TMP/q.log" 2>&1 ||
        { cat "$TMP/q.log"; fail "wg-quick down"; }
    timeout 10 bash -c "while [ -e /proc/$PID_Q ] && ! grep -q '^State:[[:space:]]*Z' /proc/$PID_Q/status; do sleep 0.1; done" ||
        fail "omni-daemon still running after wg-quick down"
    [ ! -e "$SOCK_DIR/$IF_Q.sock" ] || fail "UAPI socket left behind by wg-quick down"
fi

if [ "$PEER_KIND" = omni-daemon ]; then
    log "9. SIGTERM stops the detached omni-daemon cleanly"
    kill -TERM "$PID_B"
    timeout 10 bash -c "while [ -e /proc/$PID_B ] && ! grep -q '^State:[[:space:]]*Z' /proc/$PID_B/status; do sleep 0.1; done" ||
        fail "detached omni-daemon still running after SIGTERM"
    [ ! -e "$SOCK_DIR/$IF_B.sock" ] || fail "UAPI socket of B left behind"
    ! in_b ip link show dev "$IF_B" >/dev/null 2>&1 || fail "interface of B left behind"
fi
if grep -E "private_key=|PrivateKey|$(cut -c1-20 "$TMP/a.key" | sed 's/[+/]/./g')" "$TMP/a.log"; then
    fail "a private key was logged"
fi
