#!/usr/bin/env bash
# `make test`: installs what is missing, builds, runs every test, then the kernel-WireGuard tests
# in a VM (scripts/vm-test.sh), which the host kernel cannot run. Exits non-zero if anything fails.
# Integration tests start the real servers they need themselves (MeshTestSupport, scripts/infra.sh).
set -uo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh || { echo "test: installing dependencies failed" >&2; exit 1; }
swift build --build-tests || { echo "test: build failed" >&2; exit 1; }

status=0
swift test --skip-build || status=1
scripts/vm-test.sh || status=1

if [ "$status" != 0 ]; then
  echo "test: FAILED (see the output above)" >&2
fi
exit "$status"
