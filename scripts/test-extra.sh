#!/usr/bin/env bash
# Checks that live outside Swift. scripts/test.sh runs this after the Swift tests, with
# MESH_NATS_URL and MESH_DATABASE_URL exported and the debug build in .build/debug. Every check
# runs, and the script fails if any of them failed.
set -uo pipefail
cd "$(dirname "$0")/.."

status=0
run_check() {
  local name=$1; shift
  printf '\n--> %s\n' "$name"
  if "$@"; then echo "--> $name: passed"; else echo "--> $name: FAILED" >&2; status=1; fi
}

run_check "web page in a real browser (scripts/test-browser.sh)" scripts/test-browser.sh

exit "$status"
