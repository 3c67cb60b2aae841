#!/usr/bin/env bash
# The browser test of the /vpn/mesh page (Tests/browser/mesh_page_test.py, docs/web.md): headless
# Chromium driven by selenium against the real Gateway, services and a real node, which
# .build/debug/meshlab starts.
#
#   scripts/test-browser.sh [--out DIR]
#
# Uses the nats-server and PostgreSQL of MESH_NATS_URL / MESH_DATABASE_URL when set (make test sets
# them); otherwise starts its own with scripts/infra.sh for the run. Needs root (network
# namespaces), the debug build (swift build), and the tools scripts/deps.sh installs. Fails loudly
# when anything is missing or Chromium cannot start; it never skips.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

fail() { echo "test-browser: FAILED: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "must run as root (network namespaces for the node and the device)"
for tool in chromium chromedriver zbarimg rsvg-convert wireguard-go wg wg-quick nats-server; do
  command -v "$tool" >/dev/null || fail "$tool is not installed (scripts/deps.sh installs it)"
done
venv=${MESH_VENV:-$root/.build-venv}
"$venv/bin/python" -c 'import selenium' 2>/dev/null || fail "selenium is missing from $venv (scripts/deps.sh installs it)"
for exe in meshlab Gateway AllocatorSvc ProvisionSvc FanoutSvc NodeApplier; do
  [ -x ".build/debug/$exe" ] || fail ".build/debug/$exe is missing: build first (swift build)"
done

# Chromium must start, or the test proves nothing.
if ! version=$(timeout 60 chromium --headless=new --no-sandbox --disable-gpu --version 2>&1); then
  fail "chromium does not start: $version"
fi

# The namespaces and links meshlab makes carry the run's prefix (scripts/test.sh exports it; run
# alone, this script picks one), and only those are removed at the end.
export MESH_TEST_PREFIX=${MESH_TEST_PREFIX:-mt$(tr -dc 'a-z0-9' </dev/urandom | head -c 4)}
infra=""
cleanup() {
  if [ -n "$infra" ]; then scripts/infra.sh stop "$infra" >/dev/null 2>&1 || true; rm -rf "$infra"; fi
  scripts/test-cleanup.sh "$MESH_TEST_PREFIX" >/dev/null || true
}
trap cleanup EXIT
if [ -z "${MESH_DATABASE_URL:-}" ] || [ -z "${MESH_NATS_URL:-}" ]; then
  infra=$(mktemp -d /tmp/mesh-browser-XXXXXX)
  scripts/infra.sh start "$infra" >/dev/null || fail "could not start nats-server and PostgreSQL"
  # shellcheck disable=SC1091
  source "$infra/env"
fi
export MESH_TEST_OUTPUT=${MESH_TEST_OUTPUT:-$root/.test-output}
export SE_OFFLINE=true   # selenium uses the Chromium and chromedriver given to it, and never looks online

echo "test-browser: $(echo "$version" | tail -1)"
timeout "${MESH_BROWSER_TIMEOUT:-600}" "$venv/bin/python" Tests/browser/mesh_page_test.py --out "$MESH_TEST_OUTPUT/browser" "$@"
rc=$?
[ "$rc" = 124 ] && fail "the browser test did not finish within ${MESH_BROWSER_TIMEOUT:-600} s"
[ "$rc" = 0 ] || fail "the browser test failed (exit $rc); screenshots and logs in $MESH_TEST_OUTPUT/browser"
echo "test-browser: passed"
