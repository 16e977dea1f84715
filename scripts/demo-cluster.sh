#!/usr/bin/env bash
# The local demo cluster (README's run command; needs root, iproute2, iptables):
# network namespaces with a Nucleus (`omni-daemon --mode nucleus`) and three
# edges (`omni-daemon --nucleus ... --cluster lab --vip 10.200.0.x`), one
# public, one behind a NAT, one behind a port-randomising NAT. The edges find
# each other through the Nucleus, connect directly where NAT allows and through
# the Nucleus's relay where it does not; every VIP pings every other and each
# edge prints its `omni-daemon status` table. Everything is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
exec bash omni-daemon/tests/nat-lab.sh demo
