#!/usr/bin/env bash
# Phone fallback: how long after the relay is cut the client gets its first answer over the mesh, and
# how long after it is restored its first answer through the relay again (docs/fallback.md).
#
# Runs FallbackTests' two failover tests RUNS times (default 3) and prints the figures they report:
#   fallback loopback: ...   HTTPS fronts and mesh DNS on loopback addresses, the client in-process
#   fallback e2e: ...        the real services, WireGuard namespaces, meshctl fallback in the phone's namespace
# Needs root (namespaces, port 53 on loopback addresses). Starts its own nats-server and PostgreSQL.
#
#   scripts/bench-fallback.sh
#   RUNS=5 scripts/bench-fallback.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-3}"
infra="$(mktemp -d)"
cleanup() { scripts/infra.sh stop "$infra" >/dev/null 2>&1 || true; rm -rf "$infra"; }
trap cleanup EXIT
scripts/infra.sh start "$infra" >/dev/null
# shellcheck disable=SC1091
source "$infra/env"
export MESH_REQUIRE_INFRA=1 MESH_TEST_OUTPUT="$PWD/.test-output/bench"
swift build --build-tests >/dev/null
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for i in $(seq 1 "$RUNS"); do
  swift test --skip-build --filter 'FallbackTests.(FallbackClientTests|FallbackE2ETests)' 2>&1 \
    | grep -E '^fallback (loopback|e2e)' | sed "s/^/run $i: /"
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
