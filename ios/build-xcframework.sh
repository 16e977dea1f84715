#!/usr/bin/env bash
# Builds OmniFFIRust.xcframework (macOS with Xcode only):
#   libomni_ffi.a for iOS (arm64), the iOS simulator (arm64 + x86_64) and macOS
#   (arm64 + x86_64), with the C headers of both APIs:
#   - omni_ffiFFI.h (uniffi scaffolding, used by Sources/OmniFFI/OmniFFI.swift)
#   - omni.h        (the zero-copy C packet API, used by OmniTunnelKit)
# The portable RustCrypto provider is used: no C cross-compiler for crypto.
set -euo pipefail
cd "$(dirname "$0")"
ROOT="$(cd .. && pwd)"
TARGETS=(aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios aarch64-apple-darwin x86_64-apple-darwin)
rustup target add "${TARGETS[@]}"
for t in "${TARGETS[@]}"; do
    cargo build --release -p omni-ffi --lib --target "$t" --manifest-path "$ROOT/Cargo.toml"
done
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/headers" "$WORK/ios-sim" "$WORK/macos"
cp "$ROOT/bindings/swift/omni_ffiFFI.h" "$ROOT/bindings/c/omni.h" "$WORK/headers/"
cat > "$WORK/headers/module.modulemap" <<'MAP'
module omni_ffiFFI {
    header "omni_ffiFFI.h"
    export *
}
module OmniC {
    header "omni.h"
    export *
}
MAP
lipo -create "$TARGET_DIR"/{aarch64-apple-ios-sim,x86_64-apple-ios}/release/libomni_ffi.a -output "$WORK/ios-sim/libomni_ffi.a"
lipo -create "$TARGET_DIR"/{aarch64-apple-darwin,x86_64-apple-darwin}/release/libomni_ffi.a -output "$WORK/macos/libomni_ffi.a"
rm -rf OmniFFIRust.xcframework
xcodebuild -create-xcframework \
    -library "$TARGET_DIR/aarch64-apple-ios/release/libomni_ffi.a" -headers "$WORK/headers" \
    -library "$WORK/ios-sim/libomni_ffi.a" -headers "$WORK/headers" \
    -library "$WORK/macos/libomni_ffi.a" -headers "$WORK/headers" \
    -output OmniFFIRust.xcframework
echo "built $(pwd)/OmniFFIRust.xcframework"
