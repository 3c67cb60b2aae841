#!/usr/bin/env bash
# The scale benchmark (docs/benchmarks.md, "Scale"): one tenant with 50,000 devices and 10,000
# simulated nodes (real NodeAgent logic on in-memory interfaces) in several worker processes, all
# subscribed to the tenant's subject on a real nats-server, with the real AllocatorSvc, ProvisionSvc
# and FanoutSvc; then FanoutSvc's ingest throughput across tenants with those nodes subscribed, the
# whole path (renames through ProvisionSvc), and the persistent-map microbenchmark; then, as root,
# one real node (NodeApplier + wireguard-go in a namespace) holding 50,000 peers (`FanoutBench node`).
#   scripts/bench-scale.sh                                         everything, full size
#   scripts/bench-scale.sh scale --nodes 1000 --devices 5000       one mode, with FanoutBench's options
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh
bench_build AllocatorSvc ProvisionSvc FanoutSvc NodeApplier FanoutBench
bench_infra
export MESH_TEST_OUTPUT="$MESH_BENCH_OUTPUT"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ $# -gt 0 ]; then
  stdbuf -oL .build/release/FanoutBench "$@"
else
  stdbuf -oL .build/release/FanoutBench maps
  stdbuf -oL .build/release/FanoutBench ingest --tenants 50 --seconds 10
  stdbuf -oL .build/release/FanoutBench scale --nodes 10000 --devices 50000 --workers 4 --changes 50
  if [ "$(id -u)" = 0 ]; then
    stdbuf -oL .build/release/FanoutBench node --devices 50000 --changes 100 --restart-changes 20
  else
    echo "bench-scale: the node part needs root (network namespaces); skipped"
  fi
fi
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
