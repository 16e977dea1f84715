#!/usr/bin/env bash
# Nucleus load benchmark (not a test): starts the real `omni-daemon --mode
# nucleus` on 127.0.0.1 and the load generator (bench/nucleus-load.rs), which
# registers many simulated edges (real WireGuard handshakes, real
# registrations with membership proofs) and then keeps heartbeats in flight.
# Prints nodes registered, requests/s sustained, p50/p99 reply latency, the
# Nucleus's memory per node (RSS from /proc before/after registration) and
# CPU, and the Nucleus's own counters (rate-limited, refused, dropped).
#
#   bash omni-daemon/bench/nucleus-load.sh [--nodes N] [--seconds S] [--cluster-size N]
#                                          [--sources N] [--window N] [--register-window N]
#
# Defaults: 100000 nodes, 20 s, clusters of 10, 4096 sources, 128 heartbeats
# in flight (closed loop: latency grows with the window). A quick run
# (CI): --nodes 5000 --seconds 5 (well under a minute after the build).
#
# The Nucleus runs with its production limits: the simulated edges are spread
# over --sources UDP sockets, each on its own loopback address (127.1.x.y),
# so no source exceeds the per-source limits (100 signaling messages/s, 20 new
# sessions/s); the script prints the Nucleus's rate-limited counter so a run
# that hit them shows it. Needs no root; raises the open-file limit for the
# sockets. Everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

NODES=100000
SECONDS_=20
SOURCES=4096
GEN_ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --nodes) NODES="$2"; shift 2 ;;
        --seconds) SECONDS_="$2"; shift 2 ;;
        --sources) SOURCES="$2"; shift 2 ;;
        --cluster-size | --window | --register-window) GEN_ARGS+=("$1" "$2"); shift 2 ;;
        -h | --help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "nucleus-load: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
for v in "$NODES" "$SOURCES"; do
    [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "nucleus-load: $v is not a positive number" >&2; exit 2; }
done

TARGET="${CARGO_TARGET_DIR:-target}"
cargo build -q --release -p omni-daemon --bin omni-daemon --example nucleus-load
BIN="$TARGET/release/omni-daemon"
GEN="$TARGET/release/examples/nucleus-load"

# One socket per source, plus slack.
want=$((SOURCES + 256))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want" ]; then
    ulimit -n "$want" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want" ]; then
    echo "nucleus-load: open-file limit $(ulimit -n) < $want: use fewer --sources" >&2
    exit 1
fi

TMP="$(mktemp -d /tmp/omni-nucleus-load.XXXX)"
NUCLEUS_PID=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$NUCLEUS_PID" ]; then
        kill -TERM "$NUCLEUS_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$NUCLEUS_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$NUCLEUS_PID" 2>/dev/null || true
    fi
    if [ "$rc" != 0 ] && [ -f "$TMP/nucleus.log" ]; then
        echo "----- nucleus.log (last 20 lines)"
        tail -n 20 "$TMP/nucleus.log"
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PORT=$((40000 + RANDOM % 20000))
MPORT=$((PORT + 1))
"$BIN" --mode nucleus --port "$PORT" --identity-dir "$TMP/id" --metrics "127.0.0.1:$MPORT" --log-level warn \
    >"$TMP/nucleus.out" 2>"$TMP/nucleus.log" &
NUCLEUS_PID=$!
KEY=""
for _ in $(seq 100); do
    KEY="$(sed -n 's/^nucleus public key: //p' "$TMP/nucleus.out")"
    [ -n "$KEY" ] && break
    kill -0 "$NUCLEUS_PID" 2>/dev/null || break
    sleep 0.1
done
[ -n "$KEY" ] || { echo "nucleus-load: the Nucleus did not start" >&2; exit 1; }
echo "Nucleus pid $NUCLEUS_PID on 127.0.0.1:$PORT, key $KEY"

"$GEN" --nucleus "127.0.0.1:$PORT" --key "$KEY" --nucleus-pid "$NUCLEUS_PID" \
    --nodes "$NODES" --seconds "$SECONDS_" --sources "$SOURCES" "${GEN_ARGS[@]}"

# The Nucleus's own view (Prometheus endpoint).
metrics="$(bash -c "exec 3<>/dev/tcp/127.0.0.1/$MPORT && printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3 && timeout 5 cat <&3")"
m() { awk -v n="$1" '$1 == n { print $2 }' <<<"$metrics"; }
echo "  Nucleus counters:        members $(m omni_nucleus_members), clusters $(m omni_nucleus_clusters)," \
    "rate-limited $(m omni_nucleus_rate_limited_total), sessions refused $(m omni_nucleus_sessions_refused_total)," \
    "dropped $(m omni_nucleus_dropped_total), malformed $(m omni_nucleus_malformed_total)," \
    "queue dropped $(m omni_nucleus_queue_dropped_total)"
[ "$(m omni_nucleus_members)" = "$NODES" ] || { echo "nucleus-load: the Nucleus lists $(m omni_nucleus_members) members, expected $NODES" >&2; exit 1; }
