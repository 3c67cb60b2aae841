#!/usr/bin/env bash
# The checks of `make test` that live outside Swift. Run by scripts/test.sh (with bash, after the
# Swift tests, with the test servers' URLs exported: MESH_NATS_URL, MESH_DATABASE_URL) and the debug
# build in .build/debug. Every check runs, and the script fails if any of them failed. With
# MESH_TEST_SUMMARY set, each check adds its line to that summary (group, tests, passed, failed,
# seconds, note).
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
py=.build-venv/bin/python
out=${MESH_TEST_OUTPUT:-$(pwd)/.test-output}
mkdir -p "$out"

# run_check GROUP NAME COMMAND...: runs one check, prints its verdict, and records it. A check may
# print "<group>: N passed, M failed" (or "$COUNT_LABEL: ...", when set) to report how many tests it
# holds; otherwise it counts as one.
run_check() {
  local group=$1 name=$2; shift 2
  local log="$out/$group.log" t0 rc counts passed failed
  printf '\n--> %s\n' "$name"
  t0=$(date +%s)
  "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  counts=$(grep -oE "^${COUNT_LABEL:-$group}: [0-9]+ passed, [0-9]+ failed" "$log" | tail -1)
  if [ -n "$counts" ]; then
    passed=$(echo "$counts" | grep -oE "[0-9]+ passed" | grep -oE "[0-9]+")
    failed=$(echo "$counts" | grep -oE "[0-9]+ failed" | grep -oE "[0-9]+")
  elif [ "$rc" = 0 ]; then passed=1; failed=0
  else passed=0; failed=1
  fi
  [ "$rc" != 0 ] && [ "$failed" = 0 ] && failed=1
  if [ "$rc" = 0 ]; then echo "--> $name: passed"; else echo "--> $name: FAILED" >&2; status=1; fi
  if [ -n "${MESH_TEST_SUMMARY:-}" ]; then
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$group" $((passed + failed)) "$passed" "$failed" $(( $(date +%s) - t0 )) \
      "$([ "$rc" = 0 ] || echo "FAILED (status $rc; log $log)")" >> "$MESH_TEST_SUMMARY"
  fi
}

run_check "compose" "compose/: docker-compose config and settings" "$py" scripts/check-compose.py
run_check "browser" "web page in a real browser (scripts/test-browser.sh)" bash scripts/test-browser.sh
run_check "make-up" "make up under its supervisor, closed bus, every program killed and restarted (scripts/test-up.sh)" \
  bash scripts/test-up.sh
COUNT_LABEL=compose run_check "compose-cluster" "compose cluster end to end on a real Docker engine (scripts/test-compose.sh)" \
  timeout --kill-after=30 1200 bash scripts/test-compose.sh

exit "$status"
