#!/usr/bin/env bash
# Builds the firmware and runs it under QEMU against host peers.
# Ends with "N passed, M failed"; exits non-zero if anything failed.
# Needs what hil-tests/install-deps.sh installs (run that first on a fresh machine).
# Options: --slow also runs the long tests (rekey with WireGuard's real timers, ~2.5 min).
# OMNI_HIL_BOARDS=0 skips building the real-board crates (pico-w, esp32c3).
set -uo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
# omni-daemon (a host peer and the Nucleus in the HIL tests) comes from the
# main workspace, built where the rest of CI builds it (CARGO_TARGET_DIR, as
# .ci/run sets it, or target/), so omni-daemon/tests reuse the same build.
# OMNI_DAEMON=/path/to/omni-daemon skips that build.
main_target="${CARGO_TARGET_DIR:-$root/target}"
case "$main_target" in /*) ;; *) main_target="$root/$main_target" ;; esac
# firmware/ and hil-tests/ are workspaces of their own whose binaries this
# script finds under their own target/ dirs: ignore a CI-wide target dir.
unset CARGO_TARGET_DIR

passed=0
failed=0
failures=()
slow=()
[[ "${1:-}" == "--slow" ]] && slow=(--slow)

step() {
    local name="$1"
    shift
    echo
    echo "==> $name"
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

fw() { (cd "$root/firmware/$1" && shift && cargo "$@"); }

step "firmware: qemu-mps2 demo + selftest (release, thumbv7m)" fw qemu-mps2 build --release --bins
# The rekey test's image: omni-core with short-timers-for-tests (never for
# production), the one binary built alone (cargo keeps crates built with other
# features apart, so the feature cannot reach the demo above, which is not
# rebuilt by this step and keeps the real timers).
step "firmware: demo-short-timers-for-tests (test-only timers)" \
    fw qemu-mps2 build --release --features short-timers-for-tests --bin demo-short-timers-for-tests
step "firmware: common builds for thumbv6m and thumbv7em" \
    bash -c "cd '$root/firmware' && cargo build --release -p omni-firmware-common --target thumbv6m-none-eabi && cargo build --release -p omni-firmware-common --target thumbv7em-none-eabihf"
step "firmware: omni-core selftest on the emulated Cortex-M3 (semihosting exit code)" \
    bash "$root/hil-tests/qemu-selftest.sh" "$root/firmware/target/thumbv7m-none-eabi/release/selftest" -icount shift=0
if [[ "${OMNI_HIL_BOARDS:-1}" == 1 ]]; then
    step "firmware: pico-w builds (embassy-rp + cyw43, thumbv6m)" fw pico-w build --release
    step "firmware: esp32c3 builds (esp-hal + esp-radio, riscv32imc)" fw esp32c3 build --release
fi
step "hil-tests: build the host runner" bash -c "cd '$root/hil-tests' && cargo build --release"
if [[ -z "${OMNI_DAEMON:-}" ]]; then
    step "omni-daemon (release, main workspace: host peer and Nucleus)" \
        env CARGO_TARGET_DIR="$main_target" cargo build -q --release -p omni-daemon
    OMNI_DAEMON="$main_target/release/omni-daemon"
fi

# The HIL runner counts its own tests; fold them into ours.
echo
echo "==> hil-tests: QEMU firmware against host peers"
hil_out="$(mktemp)"
"$root/hil-tests/target/release/omni-hil" --daemon "$OMNI_DAEMON" "${slow[@]}" 2>&1 | tee "$hil_out"
hil_rc=${PIPESTATUS[0]}
line="$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$hil_out" | tail -1)"
rm -f "$hil_out"
if [[ -n "$line" ]]; then
    p="${line%% passed*}"
    f="${line#*passed, }"
    f="${f%% failed*}"
    passed=$((passed + p))
    failed=$((failed + f))
    ((f > 0)) && failures+=("hil-tests ($f)")
else
    failed=$((failed + 1))
    failures+=("hil-tests (runner exited $hil_rc without a summary)")
fi
if [[ -n "$line" && $hil_rc -ne 0 && "${f:-0}" -eq 0 ]]; then
    failed=$((failed + 1))
    failures+=("hil-tests (exit status $hil_rc)")
fi

# The core meets its footprint targets (4 peers: <= 64 KiB flash, <= 16 KiB
# RAM): --strict turns a figure past its target into a failure.
step "footprint (--strict: 4 peers within 64 KiB flash, 16 KiB RAM)" "$root/hil-tests/footprint.sh" --strict

echo
if ((failed)); then
    printf 'failed: %s\n' "${failures[@]}"
fi
echo "$passed passed, $failed failed"
((failed == 0))
