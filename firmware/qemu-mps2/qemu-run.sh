#!/usr/bin/env bash
# cargo runner for QEMU mps2-an385: qemu-run.sh <elf> [extra qemu args...]
# Environment: OMNI_FW_ARGS (device config, semihosting command line),
# OMNI_FW_PORT (UDP port forwarded from 127.0.0.1, default 51820),
# OMNI_FW_RAW=1 to print the raw defmt stream instead of decoding it.
set -euo pipefail
elf="$1"
shift
port="${OMNI_FW_PORT:-51820}"
qemu=(qemu-system-arm -machine mps2-an385 -cpu cortex-m3 -nographic -monitor none -serial none
    -semihosting-config enable=on,target=native
    -netdev "user,id=n0,net=10.0.2.0/24,hostfwd=udp:127.0.0.1:${port}-:${port}"
    -net nic,netdev=n0,model=lan9118
    -kernel "$elf" -append "${OMNI_FW_ARGS:-}" "$@")
if [[ "${OMNI_FW_RAW:-0}" == 1 ]] || ! command -v defmt-print >/dev/null; then
    exec "${qemu[@]}"
fi
set +e
"${qemu[@]}" | defmt-print -e "$elf"
exit "${PIPESTATUS[0]}"
