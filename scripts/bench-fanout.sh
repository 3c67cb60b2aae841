#!/usr/bin/env bash
# Fan-out and node apply (as root): provision reply -> peer present on 3 real nodes and on 1,000
# simulated nodes, FanoutSvc CPU per change at 100 and 10,000 devices, handshake -> online status.
#   scripts/bench-fanout.sh                 everything
#   scripts/bench-fanout.sh sim --nodes 200 one mode, with FanoutBench's options
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh
bench_build AllocatorSvc ProvisionSvc FanoutSvc NodeApplier FanoutBench
bench_infra
export MESH_TEST_OUTPUT="$MESH_BENCH_OUTPUT"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ $# -gt 0 ]; then
  .build/release/FanoutBench "$@"
else
  .build/release/FanoutBench real --changes 100
  .build/release/FanoutBench sim --nodes 1000 --changes 200
  .build/release/FanoutBench cpu --sizes 100,10000 --changes 1000
  .build/release/FanoutBench online --devices 20
fi
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
