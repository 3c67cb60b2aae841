#!/usr/bin/env bash
# `make down`: stops everything `make up` started (every program, then supervisord itself, then any
# process of this state folder left without a supervisor) and removes its namespaces and bridge.
# The data (PostgreSQL, keys, node registrations) stays; remove the state folder to start afresh.
# Same settings as scripts/up.sh (MESH_UP_STATE, MESH_UP_NAME, ...).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# shellcheck source=scripts/up-lib.sh
source scripts/up-lib.sh
if sv_running; then
  pid=$(sv_ctl pid)
  # The reverse of the start order: gateway, nodes, services, then NATS and PostgreSQL (a plain
  # `stop all` stops them all at once).
  for group in "Gateway demo-idp" "NodeApplier-node1 NodeApplier-node2" "wireguard-go-node1 wireguard-go-node2" \
               "AllocatorSvc ProvisionSvc FanoutSvc" "nats postgres"; do
    # shellcheck disable=SC2086
    sv_ctl stop $group 2>&1 | grep -v "not running\|no such process" | sed 's/^/  /'
  done
  sv_ctl stop all > /dev/null 2>&1   # anything else a newer configuration added
  sv_ctl shutdown > /dev/null
  for _ in $(seq 1 100); do
    st=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || break
    [ "$st" = Z ] && break
    sleep 0.1
  done
  echo "stopped supervisord"
fi
left=$(up_processes)
if [ -n "$left" ]; then
  echo "stopping $(echo "$left" | wc -w) process(es) without a supervisor"
  kill_orphans
fi
# An earlier `make up` ran its processes from pid files and NATS and PostgreSQL with infra.sh.
for f in "$state"/run/*.pid; do
  [ -f "$f" ] || continue
  [ "$(basename "$f")" = supervisord.pid ] && continue
  pid=$(cat "$f"); st=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
  if [ -n "$st" ] && [ "$st" != Z ]; then kill -TERM "$pid" 2>/dev/null && echo "stopped $(basename "$f" .pid) (pid $pid)"; fi
  rm -f "$f"
done
[ -f "$state/infra/nats.pid" ] || [ -f "$state/infra/pg/data/postmaster.pid" ] && scripts/infra.sh stop "$state/infra" && echo "stopped NATS and PostgreSQL (infra.sh)"
for i in 1 2; do
  ns="$up_name-node$i"
  ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$ns" || continue
  # Whatever else runs in the namespace (nothing should by now).
  for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
  ip netns del "$ns" && echo "removed namespace $ns"
done
ip link del "$bridge" 2>/dev/null && echo "removed bridge $bridge"
rm -f "$state"/nodes/*/run/*.sock
exit 0
