#!/usr/bin/env bash
# Bus round trip: MeshBus (BusService endpoint and raw subscription) against a plain nats.c
# program (Benchmarks/c/nats_rtt.c, built here with gcc), same run, same nats-server.
# Extra arguments go to BusBench, e.g. scripts/bench-bus.sh --count 50000 --rounds 5
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh
bench_build BusBench
cbin="$MESH_BENCH_OUTPUT/nats_rtt"
gcc -O2 -Wall -Wextra -o "$cbin" Benchmarks/c/nats_rtt.c $(pkg-config --cflags --libs libnats)
bench_infra
echo "bench-bus: nats-server $(nats-server --version | awk '{print $NF}'), libnats $(pkg-config --modversion libnats), gcc -O2"
.build/release/BusBench --c-binary "$cbin" "$@"
