#!/usr/bin/env bash
# The Raspberry Pi build: omni-daemon cross-compiled for aarch64 Linux
# (aarch64-unknown-linux-gnu, the 64-bit Raspberry Pi OS target) and run under
# qemu-aarch64 user mode. Not a CPU emulation of a whole Pi, but the real
# aarch64 binary doing real work through the host kernel: it creates its TUN
# interface in a network namespace, is configured with stock `wg` over its UAPI
# socket, completes a handshake with wireguard-go (Debian) in a second
# namespace and carries pings both ways.
#
# Needs root, rustup target aarch64-unknown-linux-gnu, the Debian packages
# gcc-aarch64-linux-gnu, libc6-dev-arm64-cross, qemu-user, wireguard-go and
# wireguard-tools (.ci/run installs them). Everything it creates is removed on
# every exit path; every wait is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET=aarch64-unknown-linux-gnu
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac

[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces, TUN)" >&2; exit 1; }
for tool in aarch64-linux-gnu-gcc qemu-aarch64 wireguard-go wg ip ping readelf; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 1; }
done

log() { echo "[$(date +%H:%M:%S)] $*"; }

# Cross toolchain for the C parts (aws-lc) and the final link; set here rather
# than in .cargo/config.toml so host builds never see it.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
log "cross-compiling omni-daemon for $TARGET"
cargo build -q --release -p omni-daemon --target "$TARGET"
BIN="$TARGET_DIR/$TARGET/release/omni-daemon"
machine=$(readelf -h "$BIN" | awk -F: '/Machine/ { gsub(/^ +/, "", $2); print $2 }')
[ "$machine" = AArch64 ] || { echo "FAIL: $BIN is a '$machine' binary, not AArch64" >&2; exit 1; }
log "$BIN: $machine, $(stat -c %s "$BIN") bytes"
QEMU=(qemu-aarch64 -L /usr/aarch64-linux-gnu)

ID=$$
NS_A="omni-pi-$ID"
NS_B="omni-pib-$ID"
IF_A="opi$ID"
IF_B="opib$ID"
TMP=$(mktemp -d)
cleanup() {
    local rc=$?
    for ns in "$NS_A" "$NS_B"; do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    done
    sleep 0.3
    for ns in "$NS_A" "$NS_B"; do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -f "/var/run/wireguard/$IF_A.sock" "/var/run/wireguard/$IF_B.sock"
    if [ "$rc" != 0 ]; then
        echo "----- aarch64 omni-daemon log"
        tail -n 30 "$TMP/a.log" 2>/dev/null || true
        echo "raspberry-pi-smoke: FAILED"
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

log "--help under qemu-aarch64"
"${QEMU[@]}" "$BIN" --help | grep -q "Userspace WireGuard" || fail "--help did not run"

ip netns add "$NS_A"
ip netns add "$NS_B"
ip link add "va$ID" netns "$NS_A" type veth peer name "vb$ID" netns "$NS_B"
ip -n "$NS_A" link set lo up
ip -n "$NS_B" link set lo up
ip -n "$NS_A" addr add 192.168.244.1/24 dev "va$ID"
ip -n "$NS_B" addr add 192.168.244.2/24 dev "vb$ID"
ip -n "$NS_A" link set "va$ID" up
ip -n "$NS_B" link set "vb$ID" up

ip netns exec "$NS_A" "${QEMU[@]}" "$BIN" -f "$IF_A" >"$TMP/a.log" 2>&1 &
ip netns exec "$NS_B" env WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 wireguard-go -f "$IF_B" >"$TMP/b.log" 2>&1 &
timeout 20 bash -c "until [ -S /var/run/wireguard/$IF_A.sock ] && [ -S /var/run/wireguard/$IF_B.sock ]; do sleep 0.1; done" ||
    fail "the daemons did not create their UAPI sockets"

umask 077
wg genkey >"$TMP/a.key"
wg genkey >"$TMP/b.key"
PUB_A=$(wg pubkey <"$TMP/a.key")
PUB_B=$(wg pubkey <"$TMP/b.key")
ip netns exec "$NS_A" wg set "$IF_A" private-key "$TMP/a.key" listen-port 51820 \
    peer "$PUB_B" endpoint 192.168.244.2:51821 allowed-ips 10.244.0.2/32
ip netns exec "$NS_B" wg set "$IF_B" private-key "$TMP/b.key" listen-port 51821 \
    peer "$PUB_A" endpoint 192.168.244.1:51820 allowed-ips 10.244.0.1/32
ip -n "$NS_A" addr add 10.244.0.1/24 dev "$IF_A"
ip -n "$NS_A" link set "$IF_A" up
ip -n "$NS_B" addr add 10.244.0.2/24 dev "$IF_B"
ip -n "$NS_B" link set "$IF_B" up

[ "$(ip netns exec "$NS_A" wg show "$IF_A" public-key)" = "$PUB_A" ] || fail "UAPI: public key read back"
ip netns exec "$NS_A" ping -c 3 -i 0.3 -W 3 10.244.0.2 >/dev/null || fail "ping aarch64 -> wireguard-go"
ip netns exec "$NS_B" ping -c 3 -i 0.3 -W 3 10.244.0.1 >/dev/null || fail "ping wireguard-go -> aarch64"
hs=$(ip netns exec "$NS_A" wg show "$IF_A" latest-handshakes | cut -f2)
[ "${hs:-0}" -gt 0 ] || fail "no handshake recorded"
read -r _ rx tx <<<"$(ip netns exec "$NS_A" wg show "$IF_A" transfer)"
[ "$rx" -gt 0 ] && [ "$tx" -gt 0 ] || fail "transfer counters rx=$rx tx=$tx"
log "aarch64 omni-daemon <-> wireguard-go: handshake, pings both ways (rx $rx B, tx $tx B)"

# Deleting the interface makes the daemon exit (the UAPI contract).
ip -n "$NS_A" link del "$IF_A"
timeout 10 bash -c "while [ -S /var/run/wireguard/$IF_A.sock ]; do sleep 0.1; done" ||
    fail "the daemon kept its socket after the interface was deleted"
log "raspberry-pi-smoke: ok"
