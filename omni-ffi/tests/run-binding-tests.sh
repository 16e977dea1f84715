#!/usr/bin/env bash
# omni-ffi across languages: every binding exercised for real, plus the
# mobile compile checks. One line per check, then "N passed, M failed".
# Prerequisites: omni-ffi/install-deps.sh (idempotent).
#
# Environment: OMNI_TOOLS_DIR (kotlin-compiler's npm prefix, default
# /opt/omni-ffi-tools), JNA_JAR (default /usr/share/java/jna.jar),
# VERBOSE=1 to print every check's full output.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
TESTS="$ROOT/omni-ffi/tests"
OMNI_TOOLS_DIR="${OMNI_TOOLS_DIR:-/opt/omni-ffi-tools}"
KOTLIN_HOME="${KOTLIN_HOME:-$OMNI_TOOLS_DIR/node_modules/kotlin-compiler}"
JNA_JAR="${JNA_JAR:-/usr/share/java/jna.jar}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

passed=0
failed=0
skipped=0
failures=()

# check NAME COMMAND...: runs COMMAND with its output in a log; one line of verdict.
check() {
    local name="$1"
    shift
    local log="$WORK/log.$((passed + failed + skipped))"
    local start=$SECONDS
    if "$@" >"$log" 2>&1; then
        passed=$((passed + 1))
        echo "ok: $name ($((SECONDS - start)) s)"
        [ "${VERBOSE:-0}" = 1 ] && sed 's/^/    /' "$log"
    else
        failed=$((failed + 1))
        failures+=("$name")
        echo "FAILED: $name ($((SECONDS - start)) s)"
        tail -40 "$log" | sed 's/^/    /'
    fi
    return 0
}

skip() {
    skipped=$((skipped + 1))
    echo "skipped: $1"
}

TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
LIBDIR="$TARGET_DIR/debug"
LIB="$LIBDIR/libomni_ffi.so"
# The real Nucleus for the cluster tests (debug, as omni-daemon/tests/nat-lab.sh builds it).
OMNI_DAEMON="$TARGET_DIR/debug/omni-daemon"

# ----- Rust -------------------------------------------------------------------
# First, because it builds the generators (the `cli` feature); the plain
# library is built right after and is what every test below loads.
check "bindings/{kotlin,swift,python,c} are fresh (bindings/check-fresh.sh)" bash bindings/check-fresh.sh
check "cargo build -p omni-ffi (cdylib + staticlib)" cargo build -q -p omni-ffi --lib
check "cargo build -p omni-daemon (the Nucleus the cluster tests join)" cargo build -q -p omni-daemon
check "cargo test -p omni-ffi (wg-quick parser, clock, cluster config)" cargo test -q -p omni-ffi
check "clippy -p omni-ffi -D warnings" cargo clippy -q -p omni-ffi --all-targets -- -D warnings

# ----- C ----------------------------------------------------------------------
c_build_and_run() {
    local kind="$1" bin="$WORK/scenario_$1"
    if [ "$kind" = static ]; then
        gcc -std=c11 -Wall -Wextra -Werror -O1 -g -Ibindings/c "$TESTS/c/scenario.c" "$LIBDIR/libomni_ffi.a" \
            -lgcc_s -lutil -lrt -lpthread -lm -ldl -o "$bin" || return 1
    else
        gcc -std=c11 -Wall -Wextra -Werror -O1 -g -Ibindings/c "$TESTS/c/scenario.c" -L"$LIBDIR" -lomni_ffi \
            -Wl,-rpath,"$LIBDIR" -o "$bin" || return 1
    fi
    valgrind -q --error-exitcode=1 --leak-check=full "$bin"
}
check "C: scenario (single and batch calls) + error cases, gcc against omni.h and libomni_ffi.a, under valgrind" c_build_and_run static
check "C: scenario (single and batch calls) + error cases, gcc against omni.h and libomni_ffi.so, under valgrind" c_build_and_run shared

# ----- JNI --------------------------------------------------------------------
jni_run() {
    mkdir -p "$WORK/jni"
    javac -Xlint:all -Werror -d "$WORK/jni" android/src/main/java/net/omninervous/ffi/OmniNative.java \
        "$TESTS/jni/JniScenario.java" || return 1
    java -Xcheck:jni -cp "$WORK/jni" JniScenario "$LIB" >"$WORK/jni.out" 2>&1
    local rc=$?
    cat "$WORK/jni.out"
    if grep -q "WARNING" "$WORK/jni.out"; then
        echo "-Xcheck:jni reported warnings"
        return 1
    fi
    return $rc
}
check "JNI: javac + System.load, scenario on direct ByteBuffers under java -Xcheck:jni" jni_run

# ----- Python -----------------------------------------------------------------
python_run() {
    mkdir -p "$WORK/py"
    cp bindings/python/omni_ffi.py "$LIB" "$WORK/py/"
    OMNI_FFI_PYDIR="$WORK/py" OMNI_DAEMON="$OMNI_DAEMON" timeout 300 python3 -m pytest -q -p no:cacheprovider "$TESTS/python"
}
check "Python: uniffi bindings, scenario + typed errors + host clock + log sink; two tunnels join a real Nucleus, packets both ways (direct; relayed through the C API in place), wrong secret, taken VIP, leave (pytest)" python_run

# ----- Kotlin -----------------------------------------------------------------
KOTLINC="$KOTLIN_HOME/bin/kotlinc"
STDLIB="$KOTLIN_HOME/lib/kotlin-stdlib.jar"
# The bindings are compiled once (kotlinc is slow) into $WORK/kt-bindings;
# the tests and the benchmark are compiled against them.
kotlin_run() {
    mkdir -p "$WORK/kt-bindings" "$WORK/kt"
    javac -d "$WORK/kt-bindings" android/src/main/java/net/omninervous/ffi/OmniNative.java || return 1
    "$KOTLINC" -nowarn -cp "$JNA_JAR:$WORK/kt-bindings" -d "$WORK/kt-bindings" \
        bindings/kotlin/net/omninervous/uniffi/omni_ffi.kt omni-ffi/kotlin/net/omninervous/jna/PacketPath.kt || return 1
    # The benchmark too, in the same (slow to start) kotlinc run.
    "$KOTLINC" -nowarn -cp "$JNA_JAR:$WORK/kt-bindings" -d "$WORK/kt" \
        "$TESTS/kotlin/TunnelTest.kt" "$TESTS/kotlin/ClusterTest.kt" omni-ffi/bench/FfiBench.kt || return 1
    java -Domni.ffi.library="$LIB" -Djna.library.path="$LIBDIR" -cp "$WORK/kt:$WORK/kt-bindings:$STDLIB:$JNA_JAR" TunnelTestKt
}
kotlin_cluster() {
    [ -d "$WORK/kt/net/omninervous/tests/cluster" ] || { echo "not compiled (see the Kotlin check above)"; return 1; }
    timeout 300 java -Domni.ffi.library="$LIB" -Domni.daemon="$OMNI_DAEMON" -Djna.library.path="$LIBDIR" \
        -cp "$WORK/kt:$WORK/kt-bindings:$STDLIB:$JNA_JAR" net.omninervous.tests.cluster.ClusterTestKt
}
# A benchmark, not a test: checks that it runs and prints its ratios (debug
# build, a few hundred packets: the figures mean nothing here; run
# omni-ffi/bench/ffi-overhead.sh for them).
bench_quick() {
    [ -d "$WORK/kt-bindings/net" ] || { echo "bindings not compiled (see the Kotlin check above)"; return 1; }
    mkdir -p "$WORK/kt-bench"
    cp -r "$WORK/kt-bindings/." "$WORK/kt-bench/"
    mkdir -p "$WORK/kt-bench/net/omninervous/bench"
    cp "$WORK"/kt/net/omninervous/bench/*.class "$WORK/kt-bench/net/omninervous/bench/"
    KT_CLASSES="$WORK/kt-bench" bash omni-ffi/bench/ffi-overhead.sh --quick >"$WORK/bench.out" 2>&1
    local rc=$?
    cat "$WORK/bench.out"
    [ $rc -eq 0 ] || return $rc
    for row in "ratio C API / direct" "uniffi/JNA, per packet" "uniffi/JNA, batches of" "JNI, direct ByteBuffer in place" "Kotlin/JNA PacketPath in place" "Kotlin/JNA PacketPath, batches of"; do
        grep "$row" "$WORK/bench.out" | grep -q "ratio" || { echo "no ratio printed for: $row"; return 1; }
    done
}
android_compile_check() {
    mkdir -p "$WORK/stubs" "$WORK/android"
    javac -d "$WORK/stubs" $(find "$TESTS/android-stubs" -name '*.java') || return 1
    javac -Xlint:all -Werror -cp "$WORK/stubs" -d "$WORK/android" \
        android/src/main/java/net/omninervous/ffi/OmniNative.java || return 1
    # Against the bindings compiled by the Kotlin check (compiled here if it did not).
    if [ ! -d "$WORK/kt-bindings/net/omninervous/uniffi" ]; then
        mkdir -p "$WORK/kt-bindings"
        "$KOTLINC" -nowarn -cp "$JNA_JAR" -d "$WORK/kt-bindings" bindings/kotlin/net/omninervous/uniffi/omni_ffi.kt || return 1
    fi
    "$KOTLINC" -cp "$WORK/stubs:$WORK/android:$WORK/kt-bindings:$JNA_JAR" -d "$WORK/android" \
        $(find android/src/main/kotlin -name '*.kt') >"$WORK/android.log" 2>&1
    local rc=$?
    cat "$WORK/android.log"
    # Warnings in the generated bindings are uniffi's; ours must be clean.
    if grep -E "^(/.*)?android/src/.*: (warning|error)" "$WORK/android.log"; then
        return 1
    fi
    [ $rc -eq 0 ] && ls "$WORK/android/net/omninervous/android/OmniVpnService.class"
}
if [ -x "$KOTLINC" ]; then
    check "Kotlin: generated bindings compiled with kotlinc, handshake + packets both ways + errors on the JVM (JNA)" kotlin_run
    check "Kotlin: two tunnels join a real Nucleus (omni-daemon --mode nucleus), packets both ways, wrong secret, taken VIP, leave" kotlin_cluster
    check "benchmark runs: omni-ffi/bench/ffi-overhead.sh --quick prints C API, uniffi/JNA and JNI ratios (debug build, figures not checked)" bench_quick
    check "Android host: compile check only (kotlinc + javac against android.* stubs, not run)" android_compile_check
else
    failed=$((failed + 4))
    failures+=("Kotlin (kotlinc missing: run omni-ffi/install-deps.sh)" "Kotlin cluster (kotlinc missing)"
        "benchmark (kotlinc missing)" "Android compile check (kotlinc missing)")
    echo "FAILED: Kotlin tests: $KOTLINC not found (run omni-ffi/install-deps.sh)"
fi

# ----- Swift (header only: no Swift compiler on Linux) ------------------------
swift_header() {
    echo '#include "omni_ffiFFI.h"' | clang -fsyntax-only -std=c11 -Wall -Wextra -Werror -Ibindings/swift -x c - || return 1
    echo '#include "omni_ffiFFI.h"' | clang -fsyntax-only -Wall -Werror -Ibindings/swift -x objective-c - || return 1
    grep -o 'uniffi_omni_ffi_checksum_[a-z0-9_]*() != [0-9]*' bindings/swift/OmniFFI.swift |
        sed -E 's/^(.*)\(\) != ([0-9]+)$/CHECKSUM(\1, \2)/' >"$WORK/checksums.inc"
    clang -std=c11 -Wall -Wextra -Werror -Ibindings/swift -I"$WORK" "$TESTS/swift-header/check.c" \
        -L"$LIBDIR" -lomni_ffi -Wl,-rpath,"$LIBDIR" -o "$WORK/swift-header" || return 1
    "$WORK/swift-header"
}
check "Swift: omni_ffiFFI.h compiles with clang; linked, its calls and 34+ API checksums match the library" swift_header
if command -v swiftc >/dev/null; then
    echo "note: swiftc found, but ios/ needs the iOS SDK and the xcframework (ios/build-xcframework.sh on macOS)"
fi
echo "note: ios/ Swift sources are not compiled here (no Swift toolchain on Linux): see ios/README.md"

# ----- mobile targets ---------------------------------------------------------
for target in aarch64-linux-android aarch64-apple-ios; do
    if rustup target list --installed 2>/dev/null | grep -qx "$target"; then
        check "cargo check -p omni-ffi --target $target (RustCrypto provider)" \
            cargo check -q -p omni-ffi --target "$target"
    else
        skip "cargo check --target $target (rustup target not installed: omni-ffi/install-deps.sh)"
    fi
done

echo
if [ "$failed" -gt 0 ]; then
    printf 'failed: %s\n' "${failures[@]}"
fi
if [ "$skipped" -gt 0 ]; then
    echo "$passed passed, $failed failed, $skipped skipped"
else
    echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
