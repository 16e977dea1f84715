#!/usr/bin/env bash
# Runs a firmware test image on QEMU mps2-an385 (no network) and returns its
# semihosting exit code. Usage: qemu-selftest.sh ELF [extra qemu args...]
set -uo pipefail
elf="$1"
shift
qemu=(timeout 120 qemu-system-arm -machine mps2-an385 -cpu cortex-m3 -nographic -monitor none -serial none
    -semihosting-config enable=on,target=native -nic none -kernel "$elf" "$@")
if command -v defmt-print >/dev/null; then
    "${qemu[@]}" | defmt-print -e "$elf"
    exit "${PIPESTATUS[0]}"
fi
"${qemu[@]}" >/dev/null
