#!/usr/bin/env bash
# Per-packet overhead of omni-ffi's foreign interfaces versus calling
# omni-core directly, 1420-byte packets (encrypt on tunnel A + decrypt on
# tunnel B per packet), all figures from one run:
#
#   1. omni-ffi/examples/ffi_overhead.rs (release): omni-core direct (copying
#      and in place) and the C API through dlopen (copying and in place);
#   2. omni-ffi/bench/FfiBench.kt on the JVM: the generated uniffi Kotlin
#      bindings (JNA) per packet and in batches, and JNI with direct
#      ByteBuffers (Android's packet path), with ratios against the direct
#      figures of step 1;
#   3. the Rust example again, so the direct anchor is bracketed in time
#      (the best of both runs is the anchor; both are printed).
#
# Usage: omni-ffi/bench/ffi-overhead.sh [--quick]
#   --quick  debug build and a few hundred packets: checks that the benchmark
#            runs and prints its ratios (what run-binding-tests.sh does); the
#            figures of a debug build mean nothing.
# Environment: CARGO_TARGET_DIR, OMNI_TOOLS_DIR / KOTLIN_HOME, JNA_JAR (as
# run-binding-tests.sh); KT_CLASSES: a directory holding the compiled Kotlin
# bindings and OmniNative, and perhaps FfiBench (skips compiling them again);
# FEATURES (e.g. ring).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
OMNI_TOOLS_DIR="${OMNI_TOOLS_DIR:-/opt/omni-ffi-tools}"
KOTLIN_HOME="${KOTLIN_HOME:-$OMNI_TOOLS_DIR/node_modules/kotlin-compiler}"
JNA_JAR="${JNA_JAR:-/usr/share/java/jna.jar}"
KOTLINC="$KOTLIN_HOME/bin/kotlinc"
STDLIB="$KOTLIN_HOME/lib/kotlin-stdlib.jar"

quick=0
[ "${1:-}" = "--quick" ] && quick=1
if [ $quick = 1 ]; then
    profile=debug
    release=()
    packets=40
    rounds=1
else
    profile=release
    release=(--release)
    packets=20000
    rounds=7
fi
features=()
[ -n "${FEATURES:-}" ] && features=(--features "$FEATURES")

TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
cargo build -q "${release[@]}" "${features[@]}" -p omni-ffi --lib --example ffi_overhead
LIB="$TARGET_DIR/$profile/libomni_ffi.so"
EXAMPLE="$TARGET_DIR/$profile/examples/ffi_overhead"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

classes="$WORK/kt"
mkdir -p "$classes"
if [ -n "${KT_CLASSES:-}" ]; then
    cp -r "$KT_CLASSES/." "$classes/"
else
    javac -d "$classes" android/src/main/java/net/omninervous/ffi/OmniNative.java
    "$KOTLINC" -nowarn -cp "$JNA_JAR:$classes" -d "$classes" bindings/kotlin/net/omninervous/uniffi/omni_ffi.kt
fi
# run-binding-tests.sh compiles FfiBench.kt with its tests (one kotlinc run).
if [ ! -f "$classes/net/omninervous/bench/FfiBenchKt.class" ]; then
    "$KOTLINC" -nowarn -cp "$JNA_JAR:$classes" -d "$classes" omni-ffi/bench/FfiBench.kt
fi

figure() { sed -n "s/^figures:.* $1=\([0-9.]*\).*/\1/p" "$2"; }

echo "== Rust: omni-core direct and the C API ($profile build) =="
"$EXAMPLE" "$LIB" $packets $rounds | tee "$WORK/rust1.txt"
direct1="$(figure direct_ns "$WORK/rust1.txt")"
inplace1="$(figure direct_in_place_ns "$WORK/rust1.txt")"

echo
echo "== JVM: uniffi Kotlin bindings (JNA) and JNI =="
java -Domni.ffi.library="$LIB" -Djna.library.path="$(dirname "$LIB")" \
    -Dbench.packets=$packets -Dbench.rounds=$rounds \
    -Dbench.direct.ns="$direct1" -Dbench.direct.inplace.ns="$inplace1" \
    -cp "$classes:$STDLIB:$JNA_JAR" net.omninervous.bench.FfiBenchKt | tee "$WORK/jvm.txt"

echo
echo "== Rust again (the direct anchor after the JVM run) =="
"$EXAMPLE" "$LIB" $packets $rounds | tee "$WORK/rust2.txt"
direct2="$(figure direct_ns "$WORK/rust2.txt")"
inplace2="$(figure direct_in_place_ns "$WORK/rust2.txt")"

# The JVM ratios above are against the first run; the summary gives them
# against both runs (the anchor before and after), so the noise shows.
python3 - "$direct1" "$direct2" "$inplace1" "$inplace2" \
    "$(figure uniffi_ns "$WORK/jvm.txt")" "$(figure uniffi_batch_ns "$WORK/jvm.txt")" "$(figure jni_ns "$WORK/jvm.txt")" \
    "$(figure capi_ns "$WORK/rust1.txt")" "$(figure capi_ns "$WORK/rust2.txt")" \
    "$(figure jna_direct_ns "$WORK/jvm.txt")" <<'EOF'
import sys
d1, d2, i1, i2, u, ub, j, c1, c2, jd = map(float, sys.argv[1:])
print()
print(f"direct anchor: {d1:.1f} ns/packet before the JVM run, {d2:.1f} after "
      f"({(d2 / d1 - 1) * 100:+.1f} %); in place {i1:.1f} / {i2:.1f} ns")
print("summary (ratio to omni-core direct, against the anchor before / after the JVM run; target <= 1.10):")
print(f"  C API (dlopen, copying)          : {c1 / d1:.3f} / {c2 / d2:.3f}")
print(f"  JNI, direct ByteBuffer in place  : {j / i1:.3f} / {j / i2:.3f}   (vs direct in place)")
print(f"  Kotlin/JNA direct mapping, C API : {jd / i1:.3f} / {jd / i2:.3f}   (vs direct in place)")
print(f"  uniffi/JNA, batches of 32        : {ub / d1:.3f} / {ub / d2:.3f}")
print(f"  uniffi/JNA, per packet           : {u / d1:.3f} / {u / d2:.3f}")
EOF
grep -q "ratio" "$WORK/jvm.txt"
[ $quick = 1 ] && echo "(--quick: debug build, figures not meaningful)"
exit 0
