# Shared by the scripts/bench-*.sh scripts (sourced, not run).
#   bench_build PRODUCT...      release-build the products (quietly; the log is shown on failure)
#   bench_infra [--durable]     start a private nats-server and PostgreSQL for this script, export
#                               their env (scripts/infra.sh), and stop them when the script exits
# Everything a run leaves (service logs) goes to $MESH_BENCH_OUTPUT (default .test-output/bench).

bench_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export MESH_BIN_DIR="$bench_root/.build/release"
export MESH_BENCH_OUTPUT="${MESH_BENCH_OUTPUT:-$bench_root/.test-output/bench}"
mkdir -p "$MESH_BENCH_OUTPUT"

bench_build() {
  local log p
  # MESH_BENCH_SKIP_BUILD=1: use the release build as it is (swift build -c release beforehand);
  # building product by product rebuilds modules a whole build already made.
  if [ "${MESH_BENCH_SKIP_BUILD:-0}" = 1 ]; then
    for p in "$@"; do
      [ -x "$bench_root/.build/release/$p" ] || { echo "bench: .build/release/$p is missing (MESH_BENCH_SKIP_BUILD=1)" >&2; exit 1; }
    done
    return 0
  fi
  log=$(mktemp)
  for p in "$@"; do
    if ! (cd "$bench_root" && swift build -c release --product "$p") >"$log" 2>&1; then
      cat "$log" >&2; rm -f "$log"
      echo "bench: release build of $p failed" >&2
      exit 1
    fi
  done
  rm -f "$log"
}

bench_infra() {
  bench_infra_dir=$(mktemp -d /tmp/mesh-bench-XXXXXX)
  chmod 755 "$bench_infra_dir"   # PostgreSQL runs as the postgres user and must reach its data directory
  trap 'scripts/infra.sh stop "$bench_infra_dir" >/dev/null 2>&1; rm -rf "$bench_infra_dir"' EXIT
  (cd "$bench_root" && scripts/infra.sh start "$bench_infra_dir" "$@") >/dev/null \
    || { echo "bench: could not start nats-server and PostgreSQL" >&2; exit 1; }
  # shellcheck disable=SC1091
  source "$bench_infra_dir/env"
}
