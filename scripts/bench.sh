#!/usr/bin/env bash
# `make bench`: runs every benchmark and prints its figures (docs/benchmarks.md explains each).
# Each part starts its own nats-server and PostgreSQL and builds what it needs in release mode
# (the first release build takes many minutes on two cores). A part that fails is reported and
# the others still run; the exit status is non-zero if any failed.
#   scripts/bench.sh                 everything
#   scripts/bench.sh bus store       only the named parts (bus store store-durable allocator
#                                    provision fanout scale dataplane wireguard dns gateway latency json live policy)
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh || { echo "bench: installing dependencies failed" >&2; exit 1; }

parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(bus store store-durable allocator provision fanout scale dataplane wireguard dns gateway latency json live policy)
failed=()
run() {
  local name=$1; shift
  printf '\n==> %s: %s\n' "$name" "$*"
  local start=$SECONDS
  if "$@"; then
    printf '==> %s: done in %d s\n' "$name" $((SECONDS - start))
  else
    printf '==> %s: FAILED (exit %d)\n' "$name" "$?" >&2
    failed+=("$name")
  fi
}
for part in "${parts[@]}"; do
  case "$part" in
    bus) run bus scripts/bench-bus.sh ;;
    store) run store scripts/bench-store.sh ;;
    store-durable) run store-durable scripts/bench-store.sh --durable ;;
    allocator) run allocator scripts/bench-allocator.sh ;;
    provision) run provision scripts/bench-provision.sh ;;
    fanout) run fanout scripts/bench-fanout.sh ;;
    scale) run scale scripts/bench-scale.sh ;;
    dataplane) run dataplane scripts/bench-dataplane.sh ;;
    wireguard) run wireguard scripts/bench-wireguard.sh ;;
    latency) run latency scripts/bench-latency.sh ;;
    json) run json scripts/bench-json.sh ;;
    live) run live scripts/bench-live.sh ;;
    policy) run policy scripts/bench-policy.sh ;;
    dns|gateway)
      if [ -x "scripts/bench-$part.sh" ]; then run "$part" "scripts/bench-$part.sh"
      else printf '\n==> %s: scripts/bench-%s.sh is not there yet; skipped\n' "$part" "$part"; fi ;;
    *) echo "bench: unknown part $part" >&2; failed+=("$part") ;;
  esac
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "bench: failed: ${failed[*]}" >&2
  exit 1
fi
echo "bench: all parts ran"
