#!/usr/bin/env bash
# The checks of `make test` that live outside Swift. Run by scripts/test.sh after the Swift tests,
# with the test servers' URLs exported and the debug build in .build/debug.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
py=.build-venv/bin/python

echo "--> compose/: docker-compose config and settings"
"$py" scripts/check-compose.py || status=1

exit "$status"
