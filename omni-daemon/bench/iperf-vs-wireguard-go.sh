#!/usr/bin/env bash
# Throughput benchmark (not a test: it fails only if something does not run):
# iperf3 TCP through a pair of omni-daemons and through a pair of
# wireguard-go daemons, in the same run, on the same two network namespaces
# joined by a veth pair; also through two omni-daemon edges of a cluster
# (`--nucleus ... --vip`, the Nucleus in the first namespace), whose data
# path differs (one thread, the Nucleus client routing every packet).
# Prints Mbit/s, the ratio and the daemons' CPU time
# per Gbit (utime+stime of both daemons over the transfer, from
# /proc/PID/stat; equal to "cores busy per Gbit/s"), and the host's steal
# during each transfer: the share of this VM's CPU time the hypervisor gave
# to others (from /proc/stat). Steal comes and goes in bursts of seconds on
# shared hosts and cuts every contender's rate while it lasts, so compare
# rates of runs with similar steal; CPU per Gbit does not count stolen time.
# Needs root, wg, ip, iperf3, wireguard-go.
#
#   iperf-vs-wireguard-go.sh [-t SECONDS] [-r ROUNDS] [-P STREAMS] [-R] [--only omni|edges|wg-go]
#
# -t: seconds per transfer (default 10, at least 10). -r: rounds (default
# 1); each round runs every contender once, in turn, so load from elsewhere
# on the machine hits all of them alike, and the table shows the median per
# contender (a fresh daemon pair per transfer). -P: parallel streams; -R:
# reverse direction (server sends).
#
# Anchors: the current wireguard-go built as a Go module
# (`GOFLAGS=-mod=mod go install golang.zx2c4.com/wireguard@latest`, binary
# `wireguard` in $(go env GOPATH)/bin, or $WG_GO_CURRENT) when present, and
# the distribution's `wireguard-go` (Debian's is from 2022) when present; the
# headline ratio is against the current one if it exists. Each column label
# names the binary and its version. OMNI_DAEMON overrides the omni-daemon
# binary (default: a release build of this workspace).
#
# Everything it creates has a unique name and is removed on every exit path;
# every wait is bounded; all traffic stays inside its own namespaces.
set -euo pipefail

SECS=10
ROUNDS=1
STREAMS=1
REVERSE=""
ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
    -t) SECS=$2; shift 2 ;;
    -r) ROUNDS=$2; shift 2 ;;
    -P) STREAMS=$2; shift 2 ;;
    -R) REVERSE=-R; shift ;;
    --only) ONLY=$2; shift 2 ;;
    *)
        echo "usage: $0 [-t SECONDS] [-r ROUNDS] [-P STREAMS] [-R] [--only omni|edges|wg-go]" >&2
        exit 2
        ;;
    esac
done
[ "$SECS" -ge 10 ] 2>/dev/null || { echo "-t must be at least 10 seconds" >&2; exit 2; }
[ "$ROUNDS" -ge 1 ] 2>/dev/null || { echo "-r must be at least 1" >&2; exit 2; }

cd "$(dirname "$0")/../.."
ROOT=$PWD
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac

if [ "$(id -u)" != 0 ]; then
    echo "needs root (network namespaces, TUN)" >&2
    exit 1
fi
for tool in wg ip iperf3 timeout awk; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 1; }
done

if [ -z "${OMNI_DAEMON:-}" ]; then
    cargo build -q --release -p omni-daemon
    OMNI_DAEMON="$TARGET_DIR/release/omni-daemon"
fi

# The anchors: label|binary, current first.
ANCHORS=()
WG_GO_CURRENT="${WG_GO_CURRENT:-$(command -v go >/dev/null && echo "$(go env GOPATH)/bin/wireguard" || true)}"
version_of() { "$1" --version 2>/dev/null | awk 'NR == 1 { print $2 }'; }
if [ -n "$WG_GO_CURRENT" ] && [ -x "$WG_GO_CURRENT" ]; then
    ANCHORS+=("wireguard-go $(version_of "$WG_GO_CURRENT") (Go module)|$WG_GO_CURRENT")
fi
if command -v wireguard-go >/dev/null; then
    ANCHORS+=("wireguard-go $(version_of "$(command -v wireguard-go)") (distribution)|$(command -v wireguard-go)")
fi
case "$ONLY" in omni | edges) ANCHORS=() ;; esac
if [ ${#ANCHORS[@]} = 0 ] && [ "$ONLY" != omni ] && [ "$ONLY" != edges ]; then
    echo "no wireguard-go found (install the Debian package or the Go module, see the header)" >&2
    exit 1
fi

ID=$$
NS_A="omnibench-a-$ID"
NS_B="omnibench-b-$ID"
VETH_A="vba$ID"
VETH_B="vbb$ID"
SOCK_DIR=/var/run/wireguard
TMP=$(mktemp -d)
PIDS=()
IFACES=()
HZ=$(getconf CLK_TCK)

log() { echo "[$(date +%T)] $*" >&2; }
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
            echo "----- $f (last 20 lines)" >&2
            tail -n 20 "$f" >&2
        done
    fi
    # Only processes this script started live in these namespaces.
    for ns in "$NS_A" "$NS_B"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill "$pid" 2>/dev/null
        done
    done
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null
    done
    sleep 0.3
    for ns in "$NS_A" "$NS_B"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill -9 "$pid" 2>/dev/null
        done
        ip netns del "$ns" 2>/dev/null
    done
    for ifname in "${IFACES[@]}"; do
        rm -f "$SOCK_DIR/$ifname.sock"
    done
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

in_a() { timeout 60 ip netns exec "$NS_A" "$@"; }
in_b() { timeout 60 ip netns exec "$NS_B" "$@"; }
WG_BIN=$(command -v wg)
wg() { timeout 30 "$WG_BIN" "$@"; }

wait_socket() {
    timeout 10 bash -c "until [ -S '$SOCK_DIR/$1.sock' ]; do sleep 0.05; done" ||
        fail "no UAPI socket for $1"
}

# steal_ticks: "STEAL TOTAL" ticks of all CPUs since boot (/proc/stat:
# user nice system idle iowait irq softirq steal).
steal_ticks() {
    awk '/^cpu / { print $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat
}

# cpu_ticks PID...: utime + stime of the processes (all threads), in ticks.
cpu_ticks() {
    local total=0 pid t
    for pid in "$@"; do
        # Fields 14 and 15 counted after the ")" that closes the command name.
        t=$(sed 's/.*) //' "/proc/$pid/stat" | awk '{ print $12 + $13 }')
        total=$((total + t))
    done
    echo "$total"
}

ip netns add "$NS_A"
ip netns add "$NS_B"
ip link add "$VETH_A" netns "$NS_A" type veth peer name "$VETH_B" netns "$NS_B"
in_a ip link set lo up
in_b ip link set lo up
in_a ip addr add 192.168.243.1/24 dev "$VETH_A"
in_b ip addr add 192.168.243.2/24 dev "$VETH_B"
in_a ip link set "$VETH_A" up
in_b ip link set "$VETH_B" up

umask 077
wg genkey >"$TMP/a.key"
wg genkey >"$TMP/b.key"
PUB_A=$(wg pubkey <"$TMP/a.key")
PUB_B=$(wg pubkey <"$TMP/b.key")

# run_pair N LABEL KIND BINARY: starts a daemon pair, runs iperf3, prints
# "LABEL|Mbit/s|CPU seconds" and tears the pair down.
run_pair() {
    local n=$1 label=$2 kind=$3 bin=$4
    local if_a="obA$n$ID" if_b="obB$n$ID" pid_a pid_b
    if_a=${if_a:0:15}
    if_b=${if_b:0:15}
    IFACES+=("$if_a" "$if_b")
    log "$label: starting the pair ($bin)"
    local pid_n="" ip_a=10.243.0.1 ip_b=10.243.0.2
    if [ "$kind" = edges ]; then
        # A Nucleus beside edge A; the edges learn its key on first contact.
        ip netns exec "$NS_A" "$bin" --mode nucleus --port 51950 --identity-dir "$TMP/$n-nucleus" \
            --log-level warn >"$TMP/$n-nucleus.log" 2>&1 &
        pid_n=$!
        PIDS+=("$pid_n")
        ip_a=10.244.0.1
        ip_b=10.244.0.2
        ip netns exec "$NS_A" "$bin" --nucleus 192.168.243.1:51950 --cluster bench --vip "$ip_a" --port 51960 \
            --interface "$if_a" --identity-dir "$TMP/$n-a" --log-level warn >"$TMP/$n-a.log" 2>&1 &
        pid_a=$!
        ip netns exec "$NS_B" "$bin" --nucleus 192.168.243.1:51950 --cluster bench --vip "$ip_b" --port 51960 \
            --interface "$if_b" --identity-dir "$TMP/$n-b" --log-level warn >"$TMP/$n-b.log" 2>&1 &
        pid_b=$!
        PIDS+=("$pid_a" "$pid_b")
        timeout 30 bash -c "until ip netns exec '$NS_A' ping -c 1 -W 1 $ip_b >/dev/null 2>&1; do sleep 0.2; done" ||
            fail "$label: no ping between the edges"
    elif [ "$kind" = omni ]; then
        ip netns exec "$NS_A" "$bin" -f --log-level warn "$if_a" >"$TMP/$n-a.log" 2>&1 &
        pid_a=$!
        ip netns exec "$NS_B" "$bin" -f --log-level warn "$if_b" >"$TMP/$n-b.log" 2>&1 &
        pid_b=$!
    else
        ip netns exec "$NS_A" env WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 LOG_LEVEL=error \
            "$bin" -f "$if_a" >"$TMP/$n-a.log" 2>&1 &
        pid_a=$!
        ip netns exec "$NS_B" env WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 LOG_LEVEL=error \
            "$bin" -f "$if_b" >"$TMP/$n-b.log" 2>&1 &
        pid_b=$!
    fi
    if [ "$kind" != edges ]; then
    PIDS+=("$pid_a" "$pid_b")
    wait_socket "$if_a"
    wait_socket "$if_b"
    in_a wg set "$if_a" private-key "$TMP/a.key" listen-port 51900 \
        peer "$PUB_B" endpoint 192.168.243.2:51901 allowed-ips 10.243.0.2/32
    in_b wg set "$if_b" private-key "$TMP/b.key" listen-port 51901 \
        peer "$PUB_A" endpoint 192.168.243.1:51900 allowed-ips 10.243.0.1/32
    in_a ip addr add 10.243.0.1/24 dev "$if_a"
    in_b ip addr add 10.243.0.2/24 dev "$if_b"
    in_a ip link set "$if_a" up
    in_b ip link set "$if_b" up
    timeout 20 ip netns exec "$NS_A" ping -c 1 -W 5 10.243.0.2 >/dev/null || fail "$label: no ping through the tunnel"
    fi

    in_b iperf3 -s -1 -B "$ip_b" -p 5209 >"$TMP/$n-server.log" 2>&1 &
    timeout 10 bash -c "until ip netns exec '$NS_B' ss -ltn | grep -q '$ip_b:5209 '; do sleep 0.1; done" ||
        fail "$label: iperf3 server did not start"
    local c0 c1 rate s0 s1 steal
    # shellcheck disable=SC2086 # pid_n: empty without a Nucleus
    c0=$(cpu_ticks "$pid_a" "$pid_b" $pid_n)
    s0=$(steal_ticks)
    timeout $((SECS + 30)) ip netns exec "$NS_A" iperf3 -c "$ip_b" -p 5209 -t "$SECS" -P "$STREAMS" \
        $REVERSE -f m >"$TMP/$n-client.log" 2>&1 || { cat "$TMP/$n-client.log" >&2; fail "$label: iperf3"; }
    # shellcheck disable=SC2086
    c1=$(cpu_ticks "$pid_a" "$pid_b" $pid_n)
    s1=$(steal_ticks)
    steal=$(awk -v a="$s0" -v b="$s1" 'BEGIN { split(a, x, " "); split(b, y, " "); t = y[2] - x[2]; printf "%.0f", (t > 0 ? 100 * (y[1] - x[1]) / t : 0) }')
    # The receiver's total (the [SUM] line with several streams).
    rate=$(awk '/receiver/ { r = $(NF - 2) } END { print r }' "$TMP/$n-client.log")
    [ -n "$rate" ] || { cat "$TMP/$n-client.log" >&2; fail "$label: no iperf3 result"; }
    log "$label: $rate Mbit/s, daemons' CPU $(awk -v t=$((c1 - c0)) -v hz="$HZ" 'BEGIN { printf "%.1f", t / hz }') s, host steal $steal %"
    echo "$label|$rate|$(awk -v t=$((c1 - c0)) -v hz="$HZ" 'BEGIN { printf "%.2f", t / hz }')|$steal" >>"$TMP/results"

    # shellcheck disable=SC2086
    kill "$pid_a" "$pid_b" $pid_n 2>/dev/null || true
    timeout 10 bash -c "while [ -e /proc/$pid_a ] || [ -e /proc/$pid_b ]; do sleep 0.1; done" 2>/dev/null || true
    in_a ip link del "$if_a" 2>/dev/null || true
    in_b ip link del "$if_b" 2>/dev/null || true
}

: >"$TMP/results"
n=0
for round in $(seq "$ROUNDS"); do
    [ "$ROUNDS" = 1 ] || log "round $round of $ROUNDS"
    if [ "$ONLY" = "" ] || [ "$ONLY" = omni ]; then
        run_pair $n "omni-daemon" omni "$OMNI_DAEMON"
        n=$((n + 1))
    fi
    if [ "$ONLY" = "" ] || [ "$ONLY" = edges ]; then
        run_pair $n "omni-daemon edges (cluster)" edges "$OMNI_DAEMON"
        n=$((n + 1))
    fi
    for anchor in "${ANCHORS[@]}"; do
        run_pair $n "${anchor%%|*}" wg-go "${anchor#*|}"
        n=$((n + 1))
    done
done

echo
echo "iperf3 TCP, $STREAMS stream(s), ${SECS} s${REVERSE:+, reverse}, $ROUNDS round(s) (median shown)," \
    "$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), kernel $(uname -r)"
# Per contender (in order of first appearance): the median rate, and the
# CPU per Gbit of the run that gave it (the lower middle one for an even count).
awk -F'|' -v secs="$SECS" '
    !($1 in count) { order[++k] = $1 }
    { i = ++count[$1]; rate[$1, i] = $2; cpu[$1, i] = $3; all[$1] = all[$1] sprintf(" %.0f", $2); steals[$1] = steals[$1] sprintf(" %d", $4) }
    END {
        printf "%-44s %10s %14s %8s   %s\n", "", "Mbit/s", "CPU s / Gbit", "ratio", "(every run, Mbit/s) [host steal %]"
        for (j = 1; j <= k; j++) {
            l = order[j]; n = count[l]
            for (a = 1; a <= n; a++) idx[a] = a
            for (a = 1; a <= n; a++) for (b = a + 1; b <= n; b++)
                if (rate[l, idx[b]] < rate[l, idx[a]]) { t = idx[a]; idx[a] = idx[b]; idx[b] = t }
            m = idx[int((n + 1) / 2)]
            med[l] = rate[l, m]
            gbit = rate[l, m] * secs / 1000
            if (anchor == "" && l ~ /^wireguard-go/) anchor = l
            ratio = (l ~ /^wireguard-go/ && order[1] == "omni-daemon" && med[l] > 0) ? sprintf("%.2fx", med[order[1]] / med[l]) : ""
            cpg[l] = gbit > 0 ? cpu[l, m] / gbit : 0
            printf "%-44s %10.0f %14.3f %8s  %s  [%s ]\n", l, rate[l, m], cpg[l], ratio, all[l], steals[l]
        }
        # Headlines: each omni-daemon contender against the first (current) anchor.
        if (anchor != "" && med[anchor] > 0) {
            printf "\n"
            for (j = 1; j <= k; j++)
                if (order[j] ~ /^omni-daemon/) {
                    printf "%s / %s: %.2fx", order[j], anchor, med[order[j]] / med[anchor]
                    # The same in CPU time: stolen time is not in it.
                    if (cpg[order[j]] > 0) printf " (CPU per Gbit: %.2fx less)", cpg[anchor] / cpg[order[j]]
                    printf "\n"
                }
        }
    }' "$TMP/results"
