#!/usr/bin/env bash
# ProvisionSvc: device creations through NATS against release-built ProvisionSvc and AllocatorSvc,
# with a per-phase breakdown. Extra arguments go to ProvisionBench, e.g.
#   scripts/bench-provision.sh --concurrency 16 --count 5000 --replicas 2
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh
bench_build AllocatorSvc ProvisionSvc FanoutSvc ProvisionBench
bench_infra
.build/release/ProvisionBench "$@"
