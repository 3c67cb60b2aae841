#!/usr/bin/env bash
# End-to-end latencies that the tests check only for happening, never for speed: how long a change
# takes to be visible on the real mesh. Runs the scenarios of the end-to-end tests (real services,
# NodeApplier with wireguard-go in network namespaces, the secured bus, the browser) RUNS times and
# prints each figure they measure (lines starting with "figure:"). docs/benchmarks.md shows them.
#
#   scripts/bench-latency.sh [--runs N] [--no-browser]
#
# Figures: a device rename and a delete visible in DNS on every node; nodes converged after a
# NodeApplier and FanoutSvc restart; a removed node cut off the bus (bus-level and a real NodeApplier);
# the status pill green after the node's handshake report. Debug build (the tests' executables), so
# the figures include debug-build overhead. Needs root, like the tests.
set -uo pipefail
cd "$(dirname "$0")/.."
runs=3
browser=1
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --no-browser) browser=0; shift ;;
    *) echo "bench-latency: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "bench-latency: must run as root (network namespaces)" >&2; exit 1; }
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
export MESH_BIN_DIR="$bench_root/.build/debug"
swift build --build-tests >/dev/null 2>&1 || { echo "bench-latency: swift build --build-tests failed" >&2; exit 1; }
bench_infra
export MESH_TEST_PREFIX=${MESH_TEST_PREFIX:-mt$(tr -dc 'a-z0-9' </dev/urandom | head -c 4)}
trap 'scripts/test-cleanup.sh "$MESH_TEST_PREFIX" >/dev/null; scripts/infra.sh stop "$bench_infra_dir" >/dev/null 2>&1; rm -rf "$bench_infra_dir"' EXIT
bin=$(ls -t .build/debug/quazzar-meshPackageTests.xctest .build/*/debug/quazzar-meshPackageTests.xctest 2>/dev/null | head -1)
log="$MESH_BENCH_OUTPUT/latency.log"
: > "$log"
echo "bench-latency: $runs runs, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for i in $(seq 1 "$runs"); do
  echo "bench-latency: run $i"
  "$bin" --testing-library swift-testing --filter 'MeshE2ETests|SecuredMeshTests|SecuredBusTests' 2>&1 \
    | grep -E "^(security )?figure: " | sed "s/^/run $i: /" | tee -a "$log"
  if [ "$browser" = 1 ]; then
    MESH_TEST_OUTPUT="$MESH_BENCH_OUTPUT" bash scripts/test-browser.sh --out "$MESH_BENCH_OUTPUT/browser" >/dev/null 2>&1
    python3 - "$MESH_BENCH_OUTPUT/browser/summary.json" <<'EOF' | sed "s/^/run $i: /" | tee -a "$log"
import json, sys
m = json.load(open(sys.argv[1]))["measurements"]
for key in ("pill_green_after_report_seconds", "pill_green_after_handshake_seconds", "pill_green_after_device_up_seconds"):
    if key in m:
        print(f"figure: {key.replace('_', ' ').replace(' seconds', '')}: {m[key]} s")
EOF
  fi
done
echo "bench-latency: all figures in $log"
