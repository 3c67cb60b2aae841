#!/usr/bin/env bash
# Access policies on the nodes (as root): compile and apply time of the packet filter for 1,000 rules
# over 10,000 peers, policy write -> filter in force on 3 real nodes, and iperf3 through the hub with
# and without 1,000 rules (docs/benchmarks.md, "Access policies").
#   scripts/bench-policy.sh                      everything
#   scripts/bench-policy.sh compile --runs 3     one mode, with PolicyBench's options
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh
bench_build AllocatorSvc ProvisionSvc FanoutSvc NodeApplier PolicyBench
bench_infra
export MESH_TEST_OUTPUT="$MESH_BENCH_OUTPUT"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ $# -gt 0 ]; then
  .build/release/PolicyBench "$@"
else
  .build/release/PolicyBench compile --rules 1000 --peers 10000 --runs 5
  .build/release/PolicyBench propagation --changes 100
  .build/release/PolicyBench throughput --rules 1000 --seconds 5 --runs 3
fi
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
