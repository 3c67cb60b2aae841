#!/usr/bin/env bash
# Builds JSONBench in release mode and runs it: the Gateway's device list written by JSONWriter and
# by JSONEncoder (explicit CodingKeys, with and without nulls, and .convertToSnakeCase), and ISO 8601
# timestamps by Timestamp.iso, Date.ISO8601FormatStyle and ISO8601DateFormatter. In process, no
# servers. Extra arguments go to the benchmark, e.g.
#   scripts/bench-json.sh --devices 50,1000 --rounds 15 --round-ms 100
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${MESH_BENCH_SKIP_BUILD:-0}" = 1 ] || swift build -c release --product JSONBench >/dev/null
echo "bench-json: $(swift --version 2>&1 | head -1), $(nproc) cores"
exec .build/release/JSONBench "$@"
