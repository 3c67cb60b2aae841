#!/usr/bin/env bash
# Data plane (as root): iperf3 TCP throughput between two network namespaces, over the mesh (a device
# brought up from its API config to a node), over a pair configured by hand with `wg`, and over the
# bare underlay, with an IPv4 and an IPv6 underlay (docs/benchmarks.md, "Data plane"). wireguard-go
# is userspace: the seed's kernel WireGuard figure needs kernel WireGuard on real hardware.
#   scripts/bench-dataplane.sh                      both underlays, 3 rounds of 5 s per path and direction
#   scripts/bench-dataplane.sh --rounds 5 --seconds 10 --underlay6 1
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench-dataplane: must run as root (network namespaces)" >&2; exit 1; }
command -v iperf3 >/dev/null || { echo "bench-dataplane: iperf3 is not installed (scripts/deps.sh)" >&2; exit 1; }
source scripts/bench-lib.sh
bench_build AllocatorSvc ProvisionSvc FanoutSvc NodeApplier FanoutBench
bench_infra
export MESH_TEST_OUTPUT="$MESH_BENCH_OUTPUT"
echo "machine: $(nproc) cores, $(uname -r), $(wireguard-go --version 2>/dev/null | head -1), $(iperf3 --version | head -1)"
if [ $# -gt 0 ]; then
  .build/release/FanoutBench dataplane "$@"
else
  .build/release/FanoutBench dataplane --underlay6 0
  .build/release/FanoutBench dataplane --underlay6 1
fi
