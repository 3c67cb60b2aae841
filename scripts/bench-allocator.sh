#!/usr/bin/env bash
# AllocatorSvc: device allocations through NATS with 1 and 3 release-built replicas at several
# fill levels of one tenant /16, against pgbench's single-row INSERT rate on the same server.
# Extra arguments go to AllocatorBench, e.g. scripts/bench-allocator.sh --replicas 1 --count 5000
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh
bench_build AllocatorSvc AllocatorBench
bench_infra
.build/release/AllocatorBench "$@"
