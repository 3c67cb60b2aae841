#!/usr/bin/env bash
# Store: single-row INSERT transactions through MeshStore against pgbench on the same server.
#   scripts/bench-store.sh [--durable] [StoreBench options, e.g. --clients 1,8 --seconds 10]
# Without --durable the server runs the project's test configuration (fsync, synchronous_commit
# and full_page_writes off); with it, PostgreSQL's durable defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh
durable=()
if [ "${1:-}" = "--durable" ]; then durable=(--durable); shift; fi
bench_build StoreBench
bench_infra "${durable[@]}"
echo "bench-store: $("$MESH_PG_BINDIR/postgres" --version), $("$MESH_PG_BINDIR/pgbench" --version)"
.build/release/StoreBench "$@"
