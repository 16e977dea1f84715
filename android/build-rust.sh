#!/usr/bin/env bash
# Builds libomni_ffi.so for the Android ABIs into src/main/jniLibs with cargo-ndk.
# Needs: the Android NDK (ANDROID_NDK_HOME), `cargo install cargo-ndk`, and
#   rustup target add aarch64-linux-android armv7-linux-androideabi x86_64-linux-android
# The portable RustCrypto provider is used (no C cross-compiler needed for crypto).
set -euo pipefail
cd "$(dirname "$0")"
cargo ndk -t arm64-v8a -t armeabi-v7a -t x86_64 -o src/main/jniLibs \
    build --release -p omni-ffi --manifest-path ../Cargo.toml
