#!/usr/bin/env bash
# Side by side: the gateway, provisioning and propagation benchmarks of this tree and of an older
# commit, one after the other in each round, so that both see the same machine (docs/benchmarks.md,
# "Before and after").
#   scripts/bench-compare.sh COMMIT [ROUNDS]
# The older commit is checked out in a worktree ($MESH_BENCH_OLD_TREE, default /tmp/mesh-bench-COMMIT)
# and built in release mode there (about 11 minutes cold on two cores). Needs root (the real nodes
# of the propagation benchmark run in network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: scripts/bench-compare.sh COMMIT [ROUNDS]" >&2; exit 2; }
old=$(git rev-parse --short "$1")
rounds=${2:-1}
new_tree=$PWD
old_tree=${MESH_BENCH_OLD_TREE:-/tmp/mesh-bench-$old}
[ -d "$old_tree" ] || git worktree add -f "$old_tree" "$old" >/dev/null
for tree in "$old_tree" "$new_tree"; do
  echo "bench-compare: release build in $tree" >&2
  (cd "$tree" && swift build -c release >/dev/null)
done

run() {
  local tree=$1 label=$2
  echo "=== $label ($(git -C "$tree" rev-parse --short HEAD)); load average $(cut -d' ' -f1-3 /proc/loadavg)"
  (cd "$tree" && MESH_BENCH_SKIP_BUILD=1 scripts/bench-gateway.sh 2>/dev/null | sed -n '/^Gateway benchmark/,$p')
  (cd "$tree" && scripts/bench-provision.sh 2>&1 | grep -E 'concurrent:')
  (cd "$tree" && scripts/bench-fanout.sh real --changes 100 2>&1 | grep -E 'reply|p50|p99' || true)
  (cd "$tree" && scripts/bench-fanout.sh sim --nodes 1000 --changes 200 2>&1 | grep -E 'reply|p50|p99' || true)
}

for r in $(seq 1 "$rounds"); do
  echo "##### round $r of $rounds"
  run "$old_tree" "before ($old)"
  run "$new_tree" "after"
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
