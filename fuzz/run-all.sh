#!/usr/bin/env bash
# Runs every fuzz target for FUZZ_SECONDS (default 20) seconds, starting from
# the checked-in seed corpus. The corpus is copied to a temporary directory
# first, so a run never writes into the repository. Exits non-zero if any
# target crashes (the reproducer is left in fuzz/artifacts/<target>/).
#
#   FUZZ_SECONDS=60 bash fuzz/run-all.sh            # all targets
#   bash fuzz/run-all.sh node_datagram wire_parse    # a subset
#   FUZZ_SANITIZER=address bash fuzz/run-all.sh      # with ASan (~4x slower)
#
# Build flags: `-O` without cargo-fuzz's global `-a`, because debug assertions
# in curve25519-dalek cost ~3x throughput; fuzz/Cargo.toml turns debug
# assertions and overflow checks back on for omni-core and the harness.
# No sanitizer by default: omni-core is `forbid(unsafe_code)` and ASan costs
# another ~4x on the node targets. aead_differential, which drives omni-aead's
# unsafe vector code, always runs under AddressSanitizer, built in a target
# dir of its own (target/asan) so the other targets keep their build.
#
# Needs the nightly toolchain and cargo-fuzz:
#   rustup toolchain install nightly --profile minimal && cargo install cargo-fuzz
set -uo pipefail

cd "$(dirname "$0")"
unset CARGO_TARGET_DIR # fuzz/ has its own target dir (fuzz/target)

seconds="${FUZZ_SECONDS:-20}"
flags=(-O -s "${FUZZ_SANITIZER:-none}")
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=(wire_parse key_parse allowed_ip_parse node_datagram node_admission node_send_ip nucleus_parse aead_differential)
fi
asan_flags=(-O -s address --target-dir target/asan)
flags_of() {
    if [ "$1" = aead_differential ]; then echo "${asan_flags[@]}"; else echo "${flags[@]}"; fi
}

work="$(mktemp -d "${TMPDIR:-/tmp}/omni-core-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# Build everything first so the time limit is spent fuzzing.
cargo +nightly fuzz build "${flags[@]}" || exit 1
case " ${targets[*]} " in
*" aead_differential "*) cargo +nightly fuzz build "${asan_flags[@]}" aead_differential || exit 1 ;;
esac

failed=()
for t in "${targets[@]}"; do
    mkdir -p "$work/$t"
    if [ -d "corpus/$t" ]; then
        cp -R "corpus/$t/." "$work/$t/"
    fi
    echo "=== $t: ${seconds}s ==="
    # shellcheck disable=SC2046 # the flags are words without spaces
    if ! cargo +nightly fuzz run $(flags_of "$t") "$t" "$work/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1; then
        failed+=("$t")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "FAILED: ${failed[*]} (reproducers in fuzz/artifacts/)" >&2
    exit 1
fi
echo "all ${#targets[@]} targets ran ${seconds}s without crashes"
