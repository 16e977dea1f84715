#!/usr/bin/env bash
# Installs what the firmware builds and the HIL tests need. Idempotent: each
# step is skipped when its tool is already there.
#   - rustup targets for the firmware (thumbv7m for QEMU mps2-an385, thumbv7em
#     and thumbv6m for the footprint and the Pico W, riscv32imc for the ESP32-C3)
#   - QEMU (mps2-an385), wireguard-go + wg + iproute2 (second peer, in a netns),
#     iptables (the relayed-cluster test drops direct datagrams in its netns)
#   - defmt-print (decodes the firmware's defmt log)
set -euo pipefail
cd "$(dirname "$0")/.."

targets=(thumbv7m-none-eabi thumbv7em-none-eabihf thumbv6m-none-eabi riscv32imc-unknown-none-elf)
installed="$(rustup target list --installed)"
missing=()
for t in "${targets[@]}"; do
    grep -qx "$t" <<<"$installed" || missing+=("$t")
done
if ((${#missing[@]})); then
    rustup target add "${missing[@]}"
fi

need_apt=()
command -v qemu-system-arm >/dev/null || need_apt+=(qemu-system-arm)
command -v wireguard-go >/dev/null || need_apt+=(wireguard-go)
command -v wg >/dev/null || need_apt+=(wireguard-tools)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v ping >/dev/null || need_apt+=(iputils-ping)
command -v iptables >/dev/null || need_apt+=(iptables)
if ((${#need_apt[@]})); then
    SUDO=""
    [[ $(id -u) -eq 0 ]] || SUDO="sudo"
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${need_apt[@]}"
fi

if ! command -v defmt-print >/dev/null; then
    cargo install defmt-print --locked --version 1.2.0
fi
echo "hil-tests: dependencies ready"
