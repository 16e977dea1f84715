#!/usr/bin/env bash
# Regenerates every committed binding of omni-ffi:
#   bindings/kotlin  bindings/swift  bindings/python  (uniffi, library mode)
#   bindings/c/omni.h                                (cbindgen, from omni-ffi/src/capi.rs)
# Usage: bindings/regenerate.sh [OUT_DIR]   (default: bindings/ itself)
# Builds omni-ffi with the `cli` feature (the uniffi-bindgen and gen-c-header
# binaries of the workspace), so the generator always matches the uniffi
# version the library is built with.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${1:-$ROOT/bindings}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
cd "$ROOT"

TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
cargo build -q -p omni-ffi --features cli --lib --bin uniffi-bindgen --bin gen-c-header
case "$(uname -s)" in
    Darwin) LIB="$TARGET_DIR/debug/libomni_ffi.dylib" ;;
    *) LIB="$TARGET_DIR/debug/libomni_ffi.so" ;;
esac

for lang in kotlin swift python; do
    rm -rf "${OUT:?}/$lang"
    "$TARGET_DIR/debug/uniffi-bindgen" generate --no-format --library "$LIB" \
        --crate omni_ffi --language "$lang" --out-dir "$OUT/$lang" >/dev/null
done
mkdir -p "$OUT/c"
"$TARGET_DIR/debug/gen-c-header" "$ROOT/omni-ffi" "$OUT/c/omni.h"
echo "bindings regenerated in $OUT"
