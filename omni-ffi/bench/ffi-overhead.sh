#!/usr/bin/env bash
# Per-packet overhead of omni-ffi's foreign interfaces versus calling
# omni-core directly, 1420-byte packets (encrypt on tunnel A + decrypt on
# tunnel B per packet). Each step measures its anchor in its own process,
# interleaved with what it compares:
#
#   1. omni-ffi/examples/ffi_overhead.rs (release): omni-core direct (copying
#      and in place) and the C API through dlopen (copying and in place);
#   2. omni-ffi/bench/FfiBench.kt on the JVM: JNI with direct ByteBuffers
#      (Android's packet path), Kotlin/JNA PacketPath (omni-ffi/kotlin: the C
#      API with JNA direct mapping), the generated uniffi Kotlin bindings per
#      packet and in batches; each round between two rounds of omni-core
#      direct run in the same JVM (the library is built with the
#      `bench-anchor` feature, which exports that anchor), ratio = median over
#      rounds.
#
# Usage: omni-ffi/bench/ffi-overhead.sh [--quick]
#   --quick  debug build and a few hundred packets: checks that the benchmark
#            runs and prints its ratios (what run-binding-tests.sh does); the
#            figures of a debug build mean nothing.
# Environment: CARGO_TARGET_DIR, OMNI_TOOLS_DIR / KOTLIN_HOME, JNA_JAR (as
# run-binding-tests.sh); KT_CLASSES: a directory holding the compiled Kotlin
# bindings, PacketPath and OmniNative, and perhaps FfiBench (skips compiling
# them again); FEATURES (e.g. ring).
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
    rounds=15
fi
features=(--features "bench-anchor${FEATURES:+,$FEATURES}")

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
    "$KOTLINC" -nowarn -cp "$JNA_JAR:$classes" -d "$classes" bindings/kotlin/net/omninervous/uniffi/omni_ffi.kt \
        omni-ffi/kotlin/net/omninervous/jna/PacketPath.kt
fi
# run-binding-tests.sh compiles FfiBench.kt with its tests (one kotlinc run).
if [ ! -f "$classes/net/omninervous/bench/FfiBenchKt.class" ]; then
    "$KOTLINC" -nowarn -cp "$JNA_JAR:$classes" -d "$classes" omni-ffi/bench/FfiBench.kt
fi

figure() { sed -n "s/^figures:.* $1=\([0-9.]*\).*/\1/p" "$2"; }

echo "== Rust: omni-core direct and the C API ($profile build) =="
"$EXAMPLE" "$LIB" $packets $rounds | tee "$WORK/rust.txt"

echo
echo "== JVM: JNI, Kotlin/JNA PacketPath, uniffi Kotlin bindings (JNA); anchor in the same JVM =="
java -Domni.ffi.library="$LIB" -Djna.library.path="$(dirname "$LIB")" \
    -Dbench.packets=$packets -Dbench.rounds=$rounds \
    -cp "$classes:$STDLIB:$JNA_JAR" net.omninervous.bench.FfiBenchKt | tee "$WORK/jvm.txt"

python3 - "$(figure direct_ns "$WORK/rust.txt")" "$(figure capi_ns "$WORK/rust.txt")" \
    "$(figure direct_in_place_ns "$WORK/rust.txt")" "$(figure capi_in_place_ns "$WORK/rust.txt")" \
    "$(figure jni_ratio "$WORK/jvm.txt")" "$(figure jna_ratio "$WORK/jvm.txt")" "$(figure jna_batch_ratio "$WORK/jvm.txt")" \
    "$(figure uniffi_batch_ratio "$WORK/jvm.txt")" "$(figure uniffi_ratio "$WORK/jvm.txt")" <<'EOF'
import sys
d, c, di, ci, jni, jna, jb, ub, u = map(float, sys.argv[1:])
print()
print("summary (per-packet cost over omni-core direct, each against its anchor in the same process; target <= 1.10):")
print(f"  C API (dlopen, copying)                  : {c / d:.3f}")
print(f"  C API in place                           : {ci / di:.3f}")
print(f"  JNI, direct ByteBuffer in place          : {jni:.3f}")
print(f"  Kotlin/JNA PacketPath (direct mapping)   : {jna:.3f}")
print(f"  Kotlin/JNA PacketPath, batches of 32     : {jb:.3f}")
print(f"  uniffi Kotlin/JNA, batches of 32         : {ub:.3f}")
print(f"  uniffi Kotlin/JNA, per packet            : {u:.3f}")
EOF
grep -q "ratio" "$WORK/jvm.txt"
[ $quick = 1 ] && echo "(--quick: debug build, figures not meaningful)"
exit 0
