#!/usr/bin/env bash
# `make down`: stops everything `make up` started and removes its network namespaces and bridge.
# The data (.mesh/infra, node keys in .mesh/nodes) stays; remove .mesh/ to start from scratch.
set -uo pipefail
cd "$(dirname "$0")/.."
state="$(pwd)/.mesh"
stop_pid() { # name pidfile
  local pid; pid=$(cat "$2" 2>/dev/null) || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    echo "stopped $1"
  fi
  rm -f "$2"
}
for f in "$state"/run/Gateway.pid "$state"/run/demo-idp.pid "$state"/run/NodeApplier-*.pid "$state"/run/FanoutSvc.pid "$state"/run/ProvisionSvc.pid "$state"/run/AllocatorSvc.pid; do
  [ -f "$f" ] && stop_pid "$(basename "$f" .pid)" "$f"
done
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^mesh-demo-'); do
  for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -TERM "$pid" 2>/dev/null; done
  sleep 0.5
  for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
  ip netns del "$ns" && echo "removed namespace $ns"
done
ip link del mesh-demo-br 2>/dev/null && echo "removed bridge mesh-demo-br"
[ -d "$state/infra" ] && scripts/infra.sh stop "$state/infra" && echo "stopped NATS and PostgreSQL"
rm -f "$state"/nodes/*/run/*.sock
exit 0
