#!/usr/bin/env bash
# `make test`: installs what is missing, builds, starts the real servers, and runs every test:
#   1. the Swift test suites (unit tests and integration tests against real nats-server, PostgreSQL,
#      the service executables, and wireguard-go in network namespaces);
#   2. the kernel-WireGuard tests in a qemu VM (scripts/vm-test.sh), which this kernel cannot run;
#   3. the checks that live outside Swift (scripts/test-extra.sh, when present).
# Exits non-zero if anything fails. Logs and artifacts go to .test-output/.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n==> %s\n' "$*"; }

step "dependencies"
scripts/deps.sh || { echo "test: installing dependencies failed" >&2; exit 1; }

step "build"
swift build --build-tests 2>&1 | grep -vE "^warning: 'swift-distributed-tracing'|found 1 file\(s\) which are unhandled|^    /.*swift-distributed-tracing" \
  ; [ "${PIPESTATUS[0]}" = 0 ] || { echo "test: build failed" >&2; exit 1; }

# Every namespace, bridge, veth pair and WireGuard interface this run creates starts with its own
# prefix (Sources/MeshTestSupport/TestNames.swift), so that runs sharing the machine never touch
# each other's, and the clean-up removes this run's objects only.
MESH_TEST_PREFIX=${MESH_TEST_PREFIX:-mt$(tr -dc 'a-z0-9' </dev/urandom | head -c 4)}
export MESH_TEST_PREFIX
echo "test: run prefix $MESH_TEST_PREFIX"

infra=$(mktemp -d /tmp/mesh-test-XXXXXX)
cleanup() {
  scripts/infra.sh stop "$infra" >/dev/null 2>&1 || true
  # Anything a failed test of this run left behind: namespaces, bridges, veth pairs, daemons.
  scripts/test-cleanup.sh "$MESH_TEST_PREFIX" || true
  rm -rf "$infra"
}
trap cleanup EXIT

step "start nats-server and PostgreSQL"
scripts/infra.sh start "$infra" >/dev/null || { echo "test: could not start the test servers" >&2; exit 1; }
# shellcheck disable=SC1091
source "$infra/env"
export MESH_REQUIRE_INFRA=1
export MESH_TEST_OUTPUT="$root/.test-output"
mkdir -p "$MESH_TEST_OUTPUT"

status=0
step "Swift tests"
swift test --skip-build || status=1

step "kernel WireGuard in a VM"
scripts/vm-test.sh || status=1

if [ -x scripts/test-extra.sh ]; then
  step "checks outside Swift"
  scripts/test-extra.sh || status=1
fi

if [ "$status" != 0 ]; then
  echo "test: FAILED (see the output above; logs in .test-output/)" >&2
else
  echo "test: all passed"
fi
exit "$status"
