#!/usr/bin/env bash
# Builds WireGuardBench in release mode and runs it: the library's UAPI backend against
# wireguard-tools (`wg setconf`, `wg set`, `wg show dump`) on one wireguard-go daemon, same run,
# same machine. Needs root, wireguard-go and wg. Extra arguments go to the benchmark, e.g.
#   scripts/bench-wireguard.sh --sizes 100,1000 --iterations 5
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in wireguard-go wg; do
  command -v "$tool" >/dev/null || { echo "bench-wireguard: $tool is not installed (scripts/deps.sh)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "bench-wireguard: must run as root (it starts wireguard-go)" >&2; exit 1; }
swift build -c release --product WireGuardBench >/dev/null
echo "bench-wireguard: $(wireguard-go --version 2>/dev/null | head -1), $(wg --version), $(nproc) cores"
exec .build/release/WireGuardBench "$@"
