#!/usr/bin/env bash
# The checks of `make test` that live outside Swift. Run by scripts/test.sh after the Swift tests,
# with the test servers' URLs exported (MESH_NATS_URL, MESH_DATABASE_URL) and the debug build in
# .build/debug. Every check runs, and the script fails if any of them failed.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
py=.build-venv/bin/python

run_check() {
  local name=$1; shift
  printf '\n--> %s\n' "$name"
  if "$@"; then echo "--> $name: passed"; else echo "--> $name: FAILED" >&2; status=1; fi
}

run_check "compose/: docker-compose config and settings" "$py" scripts/check-compose.py
run_check "web page in a real browser (scripts/test-browser.sh)" scripts/test-browser.sh
run_check "compose cluster end to end on a real Docker engine (scripts/test-compose.sh)" \
  timeout --kill-after=30 1200 scripts/test-compose.sh

exit "$status"
