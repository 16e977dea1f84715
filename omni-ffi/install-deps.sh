#!/usr/bin/env bash
# Installs what omni-ffi/tests/run-binding-tests.sh needs. Idempotent: each
# step is skipped when its tool is already there.
#   Debian: clang (Swift header check), libjna-java (Kotlin/JNA), valgrind,
#           a JDK (javac/java), python3 + pytest
#   npm:    kotlin-compiler (kotlinc, pinned) into $OMNI_TOOLS_DIR
#   rustup: aarch64-linux-android and aarch64-apple-ios (cargo check only)
set -euo pipefail
OMNI_TOOLS_DIR="${OMNI_TOOLS_DIR:-/opt/omni-ffi-tools}"
KOTLIN_VERSION="2.4.20"

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

missing=()
dpkg -s clang >/dev/null 2>&1 || missing+=(clang)
dpkg -s libjna-java >/dev/null 2>&1 || missing+=(libjna-java)
command -v valgrind >/dev/null || missing+=(valgrind)
command -v javac >/dev/null || missing+=(default-jdk-headless)
command -v python3 >/dev/null || missing+=(python3 python3-pip)
command -v npm >/dev/null || missing+=(npm)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-deps: apt-get install ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! python3 -m pytest --version >/dev/null 2>&1; then
    echo "install-deps: pip install pytest"
    python3 -m pip install -q pytest || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-pytest
fi

KOTLINC="$OMNI_TOOLS_DIR/node_modules/kotlin-compiler/bin/kotlinc"
if [ ! -x "$KOTLINC" ] || ! grep -q "\"version\": \"$KOTLIN_VERSION\"" "$OMNI_TOOLS_DIR/node_modules/kotlin-compiler/package.json"; then
    echo "install-deps: npm install kotlin-compiler@$KOTLIN_VERSION into $OMNI_TOOLS_DIR"
    mkdir -p "$OMNI_TOOLS_DIR"
    (cd "$OMNI_TOOLS_DIR" && npm install --no-audit --no-fund --silent "kotlin-compiler@$KOTLIN_VERSION")
fi

# Mobile targets for `cargo check` (no linker or NDK needed for a check).
for t in aarch64-linux-android aarch64-apple-ios; do
    if ! rustup target list --installed | grep -qx "$t"; then
        rustup target add "$t" || echo "install-deps: warning: could not add the rustup target $t"
    fi
done
echo "install-deps: done"
