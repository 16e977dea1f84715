#!/usr/bin/env bash
# The project's test command (README.md). Runs every check CI runs, in order,
# and ends with a "N passed, M failed" line. Needs: stable Rust with the
# thumbv7em-none-eabihf and thumbv6m-none-eabi targets, nightly + cargo-fuzz
# for the fuzz step; root and the Debian packages listed in .ci/run for the
# omni-daemon namespace tests (.ci/run installs all of it).
set -uo pipefail
cd "$(dirname "$0")/.."

passed=0
failed=0
failures=()

step() {
    local name="$1"
    shift
    echo
    echo "==> $name"
    echo "    \$ $*"
    local start=$SECONDS
    if "$@"; then
        passed=$((passed + 1))
        echo "--- ok: $name ($((SECONDS - start)) s)"
    else
        failed=$((failed + 1))
        failures+=("$name")
        echo "--- FAILED: $name ($((SECONDS - start)) s)"
    fi
}

step "rustfmt" cargo fmt --all -- --check
step "clippy (omni-core, panic-freedom lints)" \
    cargo clippy -p omni-core --features ring,avx512,log --lib -- -D warnings
step "clippy (omni-core, no_std without alloc)" \
    cargo clippy -p omni-core --no-default-features --lib -- -D warnings
step "omni-core no_std, no alloc: thumbv7em-none-eabihf" \
    cargo build -p omni-core --no-default-features --target thumbv7em-none-eabihf
step "omni-core no_std, no alloc: thumbv6m-none-eabi" \
    cargo build -p omni-core --no-default-features --target thumbv6m-none-eabi
step "omni-core no_std + defmt: thumbv7em-none-eabihf" \
    cargo build -p omni-core --no-default-features --features defmt --target thumbv7em-none-eabihf
step "omni-core no_std + alloc: thumbv7em-none-eabihf" \
    cargo build -p omni-core --no-default-features --features alloc --target thumbv7em-none-eabihf
step "unit and integration tests (no alloc, host)" \
    cargo test -p omni-core --no-default-features --lib
step "unit and integration tests (default features)" \
    cargo test -p omni-core
step "tests with the ring, aws-lc and avx512 providers" \
    cargo test -p omni-core --features ring,avx512 --lib --test smoke --test interop_boringtun
# omni-aead: the daemon's AVX-512 ChaCha20-Poly1305 (RFC 8439 vectors,
# byte-for-byte against AWS-LC and RustCrypto, forgeries refused).
step "clippy (omni-aead)" cargo clippy -p omni-aead --all-targets -- -D warnings
step "omni-aead: RFC 8439 vectors, differential against AWS-LC and RustCrypto (release)" \
    cargo test -p omni-aead --release
step "simulation and interop in release mode" \
    cargo test -p omni-core --release --test simulation --test interop_boringtun
step "demo runs" bash -c 'cargo run -q -p omni-core --example demo | tail -3 | grep -q "pings delivered"'
if [ "${SKIP_FUZZ:-0}" != "1" ]; then
    step "fuzz every target briefly" env FUZZ_SECONDS="${FUZZ_SECONDS:-20}" bash fuzz/run-all.sh
fi

# omni-ffi: bindings freshness, C (valgrind), JNI (-Xcheck:jni), Python,
# Kotlin, the Swift C header, mobile cargo check (omni-ffi/install-deps.sh
# installs the toolchains; .ci/run runs it).
step "omni-ffi bindings: C, JNI, Python, Kotlin, Swift header, Android/iOS check" \
    bash omni-ffi/tests/run-binding-tests.sh

# firmware/ + hil-tests/: firmware booted under QEMU mps2-an385 talks to an
# omni-core host peer, wireguard-go and omni-daemon; rekey (short-timers test
# build); reboot/TAI64N; cluster join through a Nucleus; board builds;
# footprint (hil-tests/install-deps.sh installs QEMU and defmt-print).
step "firmware under QEMU: omni-core/wireguard-go/omni-daemon peers, rekey, reboot, Nucleus, boards, footprint" \
    bash hil-tests/run.sh

step "clippy (omni-daemon)" cargo clippy -p omni-daemon --all-targets -- -D warnings
step "omni-daemon unit tests (UAPI parser/serializer, netlink, sockets)" cargo test -p omni-daemon
# The Raspberry Pi build (issue 6): omni-daemon cross-compiled for aarch64
# Linux and run under qemu-aarch64 user mode against wireguard-go.
step "Raspberry Pi build: aarch64 omni-daemon under qemu-aarch64 <-> wireguard-go" \
    bash scripts/raspberry-pi-smoke.sh
# The namespace tests need root, wireguard-tools, wireguard-go, iproute2,
# socat, iperf3 and ping (.ci/run installs them).
step "omni-daemon <-> wireguard-go across network namespaces (+ iperf3, 131072 allowed IPs)" \
    bash omni-daemon/tests/netns-interop.sh wireguard-go --bulk
step "omni-daemon <-> omni-daemon across network namespaces (+ iperf3, 131072 allowed IPs)" \
    bash omni-daemon/tests/netns-interop.sh omni-daemon --bulk
# Nucleus NAT lab (root, iptables): a Nucleus and edges behind iptables NATs.
step "omni-daemon NAT lab: Nucleus + edges behind NATs (direct, relayed, LAN, roaming, restart, security)" \
    bash omni-daemon/tests/nat-lab.sh
step "README run command: the local demo cluster" bash scripts/demo-cluster.sh
# A benchmark, not a test: 5000 simulated edges against the real Nucleus on
# loopback (the full run is --nodes 100000; figures not checked here).
step "benchmark runs: Nucleus load generator, 5000 edges (figures not checked)" \
    bash omni-daemon/bench/nucleus-load.sh --nodes 5000 --seconds 5
step "omni-daemon <-> omni-daemon with offloads off (plain TUN, no UDP GSO/GRO)" \
    env OMNI_DAEMON_OFFLOAD=0 bash omni-daemon/tests/netns-interop.sh omni-daemon --bulk
# A benchmark, not a test: the step checks that it runs, not its figures.
step "benchmark runs: iperf3 through omni-daemon vs wireguard-go (figures not checked)" \
    bash omni-daemon/bench/iperf-vs-wireguard-go.sh

echo
if [ "$failed" -gt 0 ]; then
    printf 'failed: %s\n' "${failures[@]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
