#!/usr/bin/env bash
# NAT lab for the Nucleus (root): an "internet" network namespace
# (203.0.113.0/24 on a bridge) where `omni-daemon --mode nucleus` runs, and
# edges (`omni-daemon --nucleus ... --cluster ... --vip ...`) either on the
# internet directly or behind router namespaces doing iptables NAT
# (MASQUERADE, or MASQUERADE --random-fully for a port-randomising NAT) for
# LANs 192.168.x.0/24. Each case builds its own topology, asserts VIP-to-VIP
# pings both ways, and prints the time to the first ping and the path the
# edge reports (`omni-daemon status`: direct or relayed).
#
#   bash omni-daemon/tests/nat-lab.sh [CASE...]   (default: all cases)
#
# Cases: 1 no NAT; 2 both behind MASQUERADE -> direct; 3 one --random-fully
# + one MASQUERADE -> relayed; 4 both --random-fully -> relayed; 5 UDP
# between the edges' networks dropped -> relayed, first ping within 5 s of
# starting the edges (direct cases: 10 s); 6 two edges behind one NAT
# -> direct over the LAN (cases 1 and 3 also move 64 MB / 2 MB over TCP each
# way and check it arrives intact); 7 an edge changes address mid-transfer -> traffic
# resumes; 8 the Nucleus restarts -> pings between connected edges never
# stop; 9 wrong secret -> no peers, no tunnel; 10 malformed datagrams to the
# Nucleus -> it keeps serving; 11 an IPv6 cluster (--vip6) configured from a
# 0600 TOML file; 12 dual-stack edges (--vip and --vip6): both VIPs ping
# both ways. Case `demo` is the local demo cluster (scripts/demo-cluster.sh).
#
# Everything it creates is namespaced and named after its PID; a trap
# removes it on every exit path. Every wait has a timeout.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "$(id -u)" != 0 ]; then
    echo "nat-lab: needs root (network namespaces, TUN, iptables)" >&2
    exit 1
fi
for tool in ip iptables ping timeout; do
    command -v "$tool" >/dev/null || { echo "nat-lab: $tool not found" >&2; exit 1; }
done

CASES=("$@")
[ ${#CASES[@]} -gt 0 ] || CASES=(1 2 3 4 5 6 7 8 9 10 11 12)

if [ -z "${OMNI_DAEMON:-}" ]; then
    # A debug build is plenty for pings (and shares the test build's artifacts).
    cargo build -q -p omni-daemon
    OMNI_DAEMON="${CARGO_TARGET_DIR:-target}/debug/omni-daemon"
fi
BIN="$(realpath "$OMNI_DAEMON")"

P="onl$$"                          # prefix of every namespace name
TMP="$(mktemp -d "/tmp/omni-nat-lab.$$.XXXX")"
RUN="$TMP/run"                     # the current case's logs
PIDFILE="$TMP/pids"                # every process we started, by id
SUMMARY="$TMP/summary"
: >"$PIDFILE"
: >"$SUMMARY"
NUCLEUS_PID=""
NUCLEUS_KEY=""
INET="$P-inet"
NUCLEUS_IP=203.0.113.1
NUCLEUS="$NUCLEUS_IP:51820"
passed=0
failed=0
failures=()

log() { echo "[nat-lab] $*"; }

# Stops the processes we started (by id) and removes our namespaces (named
# after our PID); safe to call any number of times.
cleanup_topology() {
    local pid
    while read -r pid; do
        [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
    done <"$PIDFILE"
    while read -r pid; do
        [ -n "$pid" ] || continue
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done <"$PIDFILE"
    : >"$PIDFILE"
    local ns
    for ns in $(ip netns list 2>/dev/null | awk '{ print $1 }' | grep "^$P-" || true); do
        ip netns del "$ns" 2>/dev/null || true
    done
}

track() { echo "$1" >>"$PIDFILE"; }

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    cleanup_topology
    if [ "$rc" != 0 ] && [ -d "$RUN" ]; then
        for f in "$RUN"/*.log; do
            [ -f "$f" ] || continue
            echo "----- $(basename "$f") (last 30 lines)"
            tail -n 30 "$f"
        done
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

nsx() { local ns="$1"; shift; ip netns exec "$P-$ns" "$@"; }

new_ns() {
    ip netns add "$P-$1"
    nsx "$1" ip link set lo up
}

# The internet: a bridge with the Nucleus's address on it.
make_internet() {
    ip netns add "$INET"
    ip netns exec "$INET" ip link set lo up
    ip netns exec "$INET" ip link add br0 type bridge
    ip netns exec "$INET" ip addr add "$NUCLEUS_IP/24" dev br0
    ip netns exec "$INET" ip link set br0 up
}

# plug NS IFNAME BRIDGE-NS BRIDGE: a veth from NS (as IFNAME) into a bridge.
plug() {
    local ns="$1" ifname="$2" bns="$3" br="$4"
    local peer="v$RANDOM$RANDOM"
    ip link add "$ifname" netns "$ns" type veth peer name "$peer" netns "$bns"
    ip netns exec "$bns" ip link set "$peer" master "$br" up
    ip netns exec "$ns" ip link set "$ifname" up
}

# A host on the internet: public_host NAME IP
public_host() {
    new_ns "$1"
    plug "$P-$1" eth0 "$INET" br0
    nsx "$1" ip addr add "$2/24" dev eth0
}

# A NAT router: router NAME WAN-IP LAN-NUMBER NAT (masq | random)
router() {
    local name="$1" wan="$2" lan="$3" nat="$4"
    new_ns "$name"
    plug "$P-$name" wan "$INET" br0
    nsx "$name" ip addr add "$wan/24" dev wan
    nsx "$name" ip link add lan type bridge
    nsx "$name" ip addr add "192.168.$lan.1/24" dev lan
    nsx "$name" ip link set lan up
    nsx "$name" sysctl -qw net.ipv4.ip_forward=1
    # A stateful firewall on the WAN side, as on any home router: unsolicited
    # datagrams to the router itself are dropped before conntrack confirms an
    # entry for them. (Without it, a peer's early punch creates an input entry
    # that clashes with our LAN host's later mapping to that peer, and the NAT
    # then picks another port: a plain Linux box is a harder NAT than a router.)
    nsx "$name" iptables -A INPUT -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
    nsx "$name" iptables -A INPUT -i wan -j DROP
    if [ "$nat" = random ]; then
        nsx "$name" iptables -t nat -A POSTROUTING -o wan -j MASQUERADE --random-fully
    else
        nsx "$name" iptables -t nat -A POSTROUTING -o wan -j MASQUERADE
    fi
}

# A host on a router's LAN: lan_host NAME ROUTER LAN-NUMBER HOST-NUMBER
lan_host() {
    local name="$1" rt="$2" lan="$3" host="$4"
    new_ns "$name"
    plug "$P-$name" eth0 "$P-$rt" lan
    nsx "$name" ip addr add "192.168.$lan.$host/24" dev eth0
    nsx "$name" ip route add default via "192.168.$lan.1"
}

start_nucleus() {
    local out="$RUN/nucleus.out"
    : >"$out"
    # shellcheck disable=SC2086 # NUCLEUS_EXTRA: extra flags, word-split
    ip netns exec "$INET" "$BIN" --mode nucleus --port 51820 --identity-dir "$RUN/id-nucleus" ${NUCLEUS_EXTRA:-} \
        >"$out" 2>>"$RUN/nucleus.log" &
    NUCLEUS_PID=$!
    track "$NUCLEUS_PID"
    local key=""
    for _ in $(seq 100); do
        key="$(sed -n 's/^nucleus public key: //p' "$out")"
        [ -n "$key" ] && break
        kill -0 "$NUCLEUS_PID" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$key" ] || { log "the Nucleus did not start"; return 1; }
    NUCLEUS_KEY="$key"
}

# start_edge NS IFNAME VIP [extra flags...]: an edge of cluster "lab".
start_edge() {
    local ns="$1" ifname="$2" vip="$3"
    shift 3
    ip netns exec "$P-$ns" "$BIN" --nucleus "$NUCLEUS" --cluster lab --vip "$vip" --interface "$ifname" \
        --identity-dir "$RUN/id-$ifname" --log-level "${EDGE_LOG:-info}" "$@" >>"$RUN/$ifname.log" 2>&1 &
    track $!
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# wait_ping NS VIP SECONDS: until one ping gets through.
wait_ping() {
    local ns="$1" vip="$2" secs="$3"
    local end=$((SECONDS + secs))
    while [ $SECONDS -lt $end ]; do
        nsx "$ns" ping -c1 -W0.25 -q "$vip" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    return 1
}

# field IFNAME VIP COLUMN: a column of the peer's row in `omni-daemon status`
# (a dual-stack member's row starts with both VIPs: "V4,V6").
field() {
    timeout 5 "$BIN" status -i "$1" 2>/dev/null |
        awk -v v="$2" -v c="$3" '{ n = split($1, vips, ","); for (i = 1; i <= n; i++) if (vips[i] == v) print $c }'
}

# wait_path IFNAME VIP PATH SECONDS
wait_path() {
    local end=$((SECONDS + $4)) got=""
    while [ $SECONDS -lt $end ]; do
        got="$(field "$1" "$2" 4)"
        [ "$got" = "$3" ] && return 0
        sleep 0.5
    done
    log "$1 sees $2 as '${got:-absent}', expected $3"
    return 1
}

state() { timeout 5 "$BIN" status -i "$1" 2>/dev/null | sed -n 's/.*state: \([a-z]*\).*/\1/p'; }

wait_state() {
    local end=$((SECONDS + $3))
    while [ $SECONDS -lt $end ]; do
        [ "$(state "$1")" = "$2" ] && return 0
        sleep 0.5
    done
    log "$1 is '$(state "$1")', expected $2"
    return 1
}

# connect_pair NS-A IF-A VIP-A NS-B IF-B VIP-B EXPECTED-PATH TIMEOUT LABEL:
# both edges are started; pings both ways; the time to the first ping and the path.
connect_pair() {
    local nsa="$1" ifa="$2" vipa="$3" nsb="$4" ifb="$5" vipb="$6" path="$7" limit="$8" label="$9"
    local t0
    t0="$(now)"
    # One pins the Nucleus key, the other learns it on first contact.
    # shellcheck disable=SC2086 # A_EXTRA: extra flags for the first edge, word-split
    start_edge "$nsa" "$ifa" "$vipa" --nucleus-key "$NUCLEUS_KEY" ${A_EXTRA:-}
    start_edge "$nsb" "$ifb" "$vipb"
    wait_ping "$nsa" "$vipb" "$limit" || { log "no ping $vipa -> $vipb within $limit s"; return 1; }
    local first
    first="$(elapsed "$t0")"
    wait_ping "$nsb" "$vipa" 10 || { log "no ping $vipb -> $vipa"; return 1; }
    nsx "$nsa" ping -c3 -i0.2 -W1 -q "$vipb" >/dev/null || { log "pings $vipa -> $vipb lost"; return 1; }
    nsx "$nsb" ping -c3 -i0.2 -W1 -q "$vipa" >/dev/null || { log "pings $vipb -> $vipa lost"; return 1; }
    wait_path "$ifa" "$vipb" "$path" 10 || return 1
    wait_path "$ifb" "$vipa" "$path" 10 || return 1
    local ep
    ep="$(field "$ifa" "$vipb" 3)"
    printf '%-40s first ping %5s s  path %-8s (%s sees %s at %s)\n' "$label" "$first" "$path" "$ifa" "$vipb" "$ep" >>"$SUMMARY"
    log "$label: first ping after $first s, $path ($ifa reaches $vipb at $ep)"
}

# bulk NS-A VIP-A NS-B VIP-B MB LABEL: MB of random bytes over TCP each way
# through the tunnel (socat); what arrives must hash the same as what was sent.
bulk() {
    local nsa="$1" vipa="$2" nsb="$3" vipb="$4" mb="$5" label="$6"
    head -c "${mb}M" /dev/urandom >"$RUN/blob"
    local want dir from to nsf nst t0 secs got rx
    want="$(sha256sum <"$RUN/blob" | cut -d' ' -f1)"
    for dir in ab ba; do
        if [ "$dir" = ab ]; then nsf="$nsa" nst="$nsb" to="$vipb"; else nsf="$nsb" nst="$nsa" to="$vipa"; fi
        rm -f "$RUN/recv"
        nsx "$nst" timeout 60 socat -u "TCP-LISTEN:5301,bind=$to,reuseaddr" "OPEN:$RUN/recv,creat,trunc" &
        rx=$!
        track "$rx"
        sleep 0.3
        t0="$(now)"
        nsx "$nsf" timeout 60 socat -u "OPEN:$RUN/blob" "TCP:$to:5301" || { log "bulk $dir: send failed"; return 1; }
        wait "$rx" || { log "bulk $dir: receive failed"; return 1; }
        secs="$(elapsed "$t0")"
        got="$(sha256sum <"$RUN/recv" | cut -d' ' -f1)"
        [ "$got" = "$want" ] || { log "bulk $dir: $(stat -c %s "$RUN/recv") bytes arrived, hash differs"; return 1; }
        printf '%-40s %s MB %s in %5s s, intact (%s Mbit/s)\n' "$label" "$mb" "$dir" "$secs" \
            "$(awk -v m="$mb" -v s="$secs" 'BEGIN { printf "%d", m * 8.388608 / (s > 0 ? s : 0.001) }')" >>"$SUMMARY"
    done
}

# ----- the cases ---------------------------------------------------------

# The local demo cluster (scripts/demo-cluster.sh; not in the default list):
# a Nucleus and three edges of cluster "lab" (one on the internet, one behind
# an easy NAT, one behind a port-randomising NAT); every VIP pings every
# other, then each edge's `omni-daemon status` table is printed.
case_demo() {
    make_internet
    start_nucleus
    log "Nucleus $NUCLEUS_IP:51820, key $NUCLEUS_KEY"
    public_host a 203.0.113.11
    router rb 203.0.113.2 1 masq
    lan_host b rb 1 2
    router rc 203.0.113.3 2 random
    lan_host c rc 2 2
    local t0
    t0="$(now)"
    start_edge a omniA 10.200.0.1 --nucleus-key "$NUCLEUS_KEY"
    start_edge b omniB 10.200.0.2
    start_edge c omniC 10.200.0.3
    local pair
    for pair in "a 10.200.0.2" "a 10.200.0.3" "b 10.200.0.1" "b 10.200.0.3" "c 10.200.0.1" "c 10.200.0.2"; do
        set -- $pair
        wait_ping "$1" "$2" 40 || { log "no ping from edge $1 to $2"; return 1; }
        log "edge $1 reaches $2 ($(elapsed "$t0") s after start)"
    done
    sleep 1
    local e
    for e in omniA omniB omniC; do
        echo
        echo "== omni-daemon status -i $e"
        timeout 5 "$BIN" status -i "$e" || return 1
    done
    printf '%-40s all 6 VIP pairs reachable after %s s\n' "demo: Nucleus + 3 edges" "$(elapsed "$t0")" >>"$SUMMARY"
}


case_1() { # no NAT
    make_internet
    NUCLEUS_EXTRA="--metrics 127.0.0.1:9185" start_nucleus
    public_host a 203.0.113.11
    public_host b 203.0.113.12
    A_EXTRA="--metrics 127.0.0.1:9184"
    connect_pair a omniA 10.200.0.1 b omniB 10.200.0.2 direct 10 "1 no NAT"
    # The opt-in Prometheus endpoints answer (edge and Nucleus).
    local m
    m="$(scrape a 127.0.0.1 9184)"
    grep -q '^omni_edge_peers{path="direct"} 1' <<<"$m" || { log "edge metrics: $m"; return 1; }
    grep -q '^omni_edge_registered 1' <<<"$m" || { log "edge metrics: $m"; return 1; }
    m="$(ip netns exec "$INET" bash -c 'exec 3<>/dev/tcp/127.0.0.1/9185 && printf "GET /metrics HTTP/1.0\r\n\r\n" >&3 && timeout 5 cat <&3')"
    grep -q '^omni_nucleus_members 2' <<<"$m" || { log "nucleus metrics: $m"; return 1; }
    # Bulk data on the direct path (TUN super-packets, UDP GSO/GRO).
    bulk a 10.200.0.1 b 10.200.0.2 64 "1 TCP over the direct path"
}

# scrape NS ADDR PORT: GET /metrics over bash's /dev/tcp.
scrape() {
    nsx "$1" bash -c "exec 3<>/dev/tcp/$2/$3 && printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3 && timeout 5 cat <&3"
}

nat_pair() { # nat_pair NAT-A NAT-B
    make_internet
    start_nucleus
    router ra 203.0.113.2 1 "$1"
    router rb 203.0.113.3 2 "$2"
    lan_host a ra 1 2
    lan_host b rb 2 2
}

case_2() {
    nat_pair masq masq
    connect_pair a omniA 10.200.0.1 b omniB 10.200.0.2 direct 10 "2 both MASQUERADE"
}

case_3() {
    nat_pair random masq
    connect_pair a omniA 10.200.0.1 b omniB 10.200.0.2 relayed 5 "3 --random-fully + MASQUERADE"
    # Bulk data through the Nucleus's relay (segments of super-packets
    # wrapped for the relay where they were sealed; the Nucleus relays at
    # most 1 MiB/s per member, so a small amount).
    bulk a 10.200.0.1 b 10.200.0.2 2 "3 TCP through the relay"
}

case_4() {
    nat_pair random random
    connect_pair a omniA 10.200.0.1 b omniB 10.200.0.2 relayed 5 "4 both --random-fully"
}

case_5() {
    nat_pair masq masq
    # A firewall drops UDP between the two sites (the Nucleus stays reachable).
    nsx ra iptables -A FORWARD -o wan -p udp -d 203.0.113.3 -j DROP
    nsx rb iptables -A FORWARD -o wan -p udp -d 203.0.113.2 -j DROP
    connect_pair a omniA 10.200.0.1 b omniB 10.200.0.2 relayed 5 "5 UDP between sites dropped"
}

case_6() {
    make_internet
    start_nucleus
    router ra 203.0.113.2 1 masq
    lan_host a ra 1 2
    lan_host b ra 1 3
    connect_pair a omniA 10.200.0.1 b omniB 10.200.0.2 direct 10 "6 two edges behind one NAT"
    local ep
    ep="$(field omniA 10.200.0.2 3)"
    [ "$ep" = "192.168.1.3:51820" ] || { log "expected the LAN endpoint 192.168.1.3:51820, got $ep"; return 1; }
}

case_7() {
    nat_pair masq masq
    connect_pair a omniA 10.200.0.1 b omniB 10.200.0.2 direct 10 "7 address change (before)"
    # A transfer from B to A, then A's LAN address changes under it.
    ip netns exec "$P-b" ping -i 0.1 -W1 -q -w 60 10.200.0.1 >"$RUN/ping7.txt" 2>&1 &
    local ping_pid=$!
    track "$ping_pid"
    sleep 1
    local t0
    t0="$(now)"
    nsx a ip addr del 192.168.1.2/24 dev eth0
    nsx a ip addr add 192.168.1.12/24 dev eth0
    nsx a ip route add default via 192.168.1.1
    wait_ping b 10.200.0.1 30 || { log "no ping to 10.200.0.1 after its address changed"; return 1; }
    local back
    back="$(elapsed "$t0")"
    wait_ping a 10.200.0.2 10 || { log "no ping from 10.200.0.1 after its address changed"; return 1; }
    kill -INT "$ping_pid" 2>/dev/null || true
    printf '%-40s traffic back after %5s s\n' "7 edge address change mid-transfer" "$back" >>"$SUMMARY"
    log "7: traffic resumed $back s after the address change"
}

case_8() {
    nat_pair masq masq
    connect_pair a omniA 10.200.0.1 b omniB 10.200.0.2 direct 10 "8 Nucleus restart (before)"
    # 20 s of pings (5 per second) while the Nucleus is stopped and restarted.
    ip netns exec "$P-a" ping -i 0.2 -W1 -c 100 -q 10.200.0.2 >"$RUN/ping8.txt" 2>&1 &
    local ping_pid=$!
    track "$ping_pid"
    sleep 2
    kill -TERM "$NUCLEUS_PID"
    for _ in $(seq 50); do kill -0 "$NUCLEUS_PID" 2>/dev/null || break; sleep 0.1; done
    NUCLEUS_PID=""
    sleep 3
    start_nucleus
    local t0
    t0="$(now)"
    for _ in $(seq 300); do kill -0 "$ping_pid" 2>/dev/null || break; sleep 0.1; done
    local loss
    loss="$(grep -o '[0-9.]*% packet loss' "$RUN/ping8.txt" | cut -d% -f1)"
    [ "$loss" = 0 ] || { log "pings lost while the Nucleus restarted: $(tail -n 2 "$RUN/ping8.txt")"; return 1; }
    # Both edges register again with the new process.
    wait_state omniA registered 60 || return 1
    wait_state omniB registered 60 || return 1
    printf '%-40s 0%% ping loss over 20 s; edges re-registered %5s s after the restart\n' "8 Nucleus restart" "$(elapsed "$t0")" >>"$SUMMARY"
    log "8: no ping lost while the Nucleus restarted; both edges registered again"
}

case_9() { # wrong secret
    make_internet
    start_nucleus
    public_host a 203.0.113.11
    public_host b 203.0.113.12
    public_host c 203.0.113.13
    start_edge a omniA 10.200.0.1 --secret right-secret --nucleus-key "$NUCLEUS_KEY"
    start_edge b omniB 10.200.0.2 --secret right-secret --nucleus-key "$NUCLEUS_KEY"
    start_edge c omniC 10.200.0.3 --secret wrong-secret --nucleus-key "$NUCLEUS_KEY"
    wait_ping a 10.200.0.2 30 || { log "members with the right secret cannot talk"; return 1; }
    wait_state omniC registered 20 || return 1
    sleep 2
    if nsx c ping -c3 -i0.3 -W1 -q 10.200.0.1 >/dev/null 2>&1; then
        log "an edge with the wrong secret reached a member"
        return 1
    fi
    local members_c rows_a
    members_c="$(timeout 5 "$BIN" status -i omniC | sed -n 's/.*members: \([0-9]*\).*/\1/p')"
    rows_a="$(field omniA 10.200.0.3 1)"
    [ "$members_c" = 0 ] || { log "the wrong-secret edge sees $members_c members"; return 1; }
    [ -z "$rows_a" ] || { log "a member lists the wrong-secret edge"; return 1; }
    # Its pings never reached a member's TUN.
    printf '%-40s no peers, no tunnel\n' "9 wrong secret" >>"$SUMMARY"
    log "9: the wrong-secret edge registered in a cluster of its own: no peers, no tunnel"
}

case_10() { # malformed datagrams
    make_internet
    start_nucleus
    public_host a 203.0.113.11
    public_host b 203.0.113.12
    public_host x 203.0.113.66
    start_edge a omniA 10.200.0.1 --secret s --nucleus-key "$NUCLEUS_KEY"
    wait_state omniA registered 20 || return 1
    # Junk, WireGuard-typed junk (initiation/response/cookie/transport sizes),
    # truncated and padded key queries.
    # One write() per datagram: each is built in a file, then sent by cat.
    nsx x env F="$RUN/junk" bash -c '
        exec 3>/dev/udp/'"$NUCLEUS_IP"'/51820
        for i in $(seq 300); do head -c $((RANDOM % 1500 + 1)) /dev/urandom >"$F"; cat "$F" >&3; done
        for t in 1 2 3 4; do
            for len in 148 92 64 32 33 200 1500; do
                for i in $(seq 20); do
                    { printf "\\x0$t\\x00\\x00\\x00"; head -c $((len - 4)) /dev/urandom; } >"$F"
                    cat "$F" >&3
                done
            done
        done
        for i in $(seq 50); do { printf "omni-nucleus-key?"; head -c 10 /dev/urandom; } >"$F"; cat "$F" >&3; done
        exec 3>&-' || true
    sleep 1
    kill -0 "$NUCLEUS_PID" || { log "the Nucleus died"; return 1; }
    ! grep -q panicked "$RUN/nucleus.log" || { log "the Nucleus panicked"; return 1; }
    # It still admits and connects members.
    start_edge b omniB 10.200.0.2 --secret s --nucleus-key "$NUCLEUS_KEY"
    wait_ping a 10.200.0.2 30 || { log "no ping after the junk"; return 1; }
    wait_ping b 10.200.0.1 10 || { log "no ping after the junk"; return 1; }
    printf '%-40s the Nucleus kept serving\n' "10 malformed datagrams (910)" >>"$SUMMARY"
    log "10: the Nucleus survived 910 malformed datagrams and kept serving"
}

# Each case runs in a subshell with errexit (any failing command fails the
# case) and its own cleanup trap; the parent cleans up again regardless.
case_11() { # an IPv6 cluster (--vip6) across two NATs, with a secret from a 0600 config file
    nat_pair masq masq
    local conf="$RUN/edge-b.toml"
    printf 'nucleus = "%s"\ncluster = "lab6"\nsecret = "v6-secret"\nvip6 = "fd00:200::2/64"\ninterface = "omniB"\nidentity_dir = "%s"\nnucleus_key = "%s"\n' \
        "$NUCLEUS" "$RUN/id-omniB" "$NUCLEUS_KEY" >"$conf"
    chmod 600 "$conf"
    local t0
    t0="$(now)"
    ip netns exec "$P-a" "$BIN" --nucleus "$NUCLEUS" --cluster lab6 --secret v6-secret --vip6 fd00:200::1/64 \
        --interface omniA --identity-dir "$RUN/id-omniA" --nucleus-key "$NUCLEUS_KEY" >>"$RUN/omniA.log" 2>&1 &
    track $!
    ip netns exec "$P-b" "$BIN" --config "$conf" >>"$RUN/omniB.log" 2>&1 &
    track $!
    wait_ping a fd00:200::2 10 || { log "no ping fd00:200::1 -> fd00:200::2"; return 1; }
    local first
    first="$(elapsed "$t0")"
    wait_ping b fd00:200::1 10 || { log "no ping fd00:200::2 -> fd00:200::1"; return 1; }
    wait_path omniA fd00:200::2 direct 10 || return 1
    printf '%-40s first ping %5s s  path direct\n' "11 IPv6 VIPs (--vip6, --config)" "$first" >>"$SUMMARY"
    log "11: IPv6 VIPs: first ping after $first s, direct"
}

case_12() { # dual-stack edges: --vip and --vip6 together, across two NATs
    nat_pair masq masq
    local t0
    t0="$(now)"
    start_edge a omniA 10.200.0.1 --vip6 fd00:200::1/64 --secret ds --nucleus-key "$NUCLEUS_KEY"
    start_edge b omniB 10.200.0.2 --vip6 fd00:200::2/64 --secret ds
    wait_ping a 10.200.0.2 10 || { log "no ping 10.200.0.1 -> 10.200.0.2"; return 1; }
    local first
    first="$(elapsed "$t0")"
    wait_ping a fd00:200::2 10 || { log "no ping fd00:200::1 -> fd00:200::2"; return 1; }
    wait_ping b 10.200.0.1 10 || { log "no ping 10.200.0.2 -> 10.200.0.1"; return 1; }
    wait_ping b fd00:200::1 10 || { log "no ping fd00:200::2 -> fd00:200::1"; return 1; }
    # Both addresses are on each interface, with their prefixes.
    local ifaddrs
    ifaddrs="$(nsx a ip -o addr show dev omniA)"
    grep -q 'inet 10.200.0.1/24' <<<"$ifaddrs" || { log "omniA: $ifaddrs"; return 1; }
    grep -q 'inet6 fd00:200::1/64' <<<"$ifaddrs" || { log "omniA: $ifaddrs"; return 1; }
    # status shows both of ours and both of the member's, one row.
    local st row
    st="$(timeout 5 "$BIN" status -i omniA)"
    grep -q 'vip: 10.200.0.1/24, fd00:200::1/64' <<<"$st" || { log "status: $st"; return 1; }
    row="$(grep -c '^10.200.0.2,fd00:200::2 ' <<<"$st")"
    [ "$row" = 1 ] || { log "status has no dual-stack row for the member: $st"; return 1; }
    wait_path omniA fd00:200::2 direct 10 || return 1
    wait_path omniB 10.200.0.1 direct 10 || return 1
    printf '%-40s first ping %5s s  both VIPs both ways, path direct\n' "12 dual-stack edges (--vip + --vip6)" "$first" >>"$SUMMARY"
    log "12: dual stack: first ping after $first s; IPv4 and IPv6 VIPs ping both ways"
}

run_case() {
    local n="$1" start=$SECONDS rc
    log "=== case $n"
    rm -rf "$RUN"
    mkdir -p "$RUN"
    set +e
    (
        set -e
        trap cleanup_topology EXIT
        trap 'exit 130' INT
        trap 'exit 143' TERM
        "case_$n"
    )
    rc=$?
    set -e
    if [ "$rc" = 0 ]; then
        passed=$((passed + 1))
        log "--- ok: case $n ($((SECONDS - start)) s)"
    else
        failed=$((failed + 1))
        failures+=("$n")
        log "--- FAILED: case $n ($((SECONDS - start)) s)"
        for f in "$RUN"/*.log; do
            [ -f "$f" ] || continue
            echo "----- $(basename "$f") (last 25 lines)"
            tail -n 25 "$f"
        done
        [ "$rc" -lt 128 ] || exit "$rc"
    fi
    cleanup_topology
}

lab_start=$SECONDS
for c in "${CASES[@]}"; do
    declare -F "case_$c" >/dev/null || { echo "nat-lab: no case $c" >&2; exit 2; }
done
for c in "${CASES[@]}"; do
    run_case "$c"
done
echo
echo "NAT lab summary ($((SECONDS - lab_start)) s):"
sed 's/^/  /' "$SUMMARY"
if [ "$failed" -gt 0 ]; then
    echo "failed cases: ${failures[*]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
