#!/usr/bin/env bash
# `make status`: what `make up` runs, and whether it answers.
set -uo pipefail
cd "$(dirname "$0")/.."
state="$(pwd)/.mesh"
[ -d "$state" ] || { echo "nothing started yet: run make up"; exit 0; }
echo "processes:"
for f in "$state"/run/*.pid; do
  [ -f "$f" ] || continue
  name=$(basename "$f" .pid); pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then printf '  %-22s running (pid %s)\n' "$name" "$pid"; else printf '  %-22s stopped\n' "$name"; fi
done
[ -d "$state/infra" ] && scripts/infra.sh status "$state/infra" | sed 's/^/  /'
echo "namespaces:"; ip netns list 2>/dev/null | grep '^mesh-demo-' | sed 's/^/  /'
if [ -f "$state/infra/env" ] && [ -x .build/release/meshctl ] && scripts/infra.sh status "$state/infra" | grep -q "nats-server: running"; then
  # shellcheck disable=SC1091
  source "$state/infra/env"
  export MESH_JWT_SECRET_FILE="$state/secrets/jwt-secret"
  if [ "$(cat "$state/mode" 2>/dev/null)" = 1 ]; then
    export MESH_NATS_CREDS_FILE="$state/bus/creds/admin.creds" MESH_NATS_TLS_CA="$state/certs/ca.pem"
  fi
  echo "nodes (as the demo admin):"
  .build/release/meshctl node list --timeout 3 --tenant 00000000-0000-4000-8000-00000000d3e0 --as 00000000-0000-4000-8000-0000000ad000 2>&1 | sed 's/^/  /'
  echo "devices:"
  .build/release/meshctl device list --timeout 3 --tenant 00000000-0000-4000-8000-00000000d3e0 --as 00000000-0000-4000-8000-0000000ad000 2>&1 | sed 's/^/  /'
fi
gw=${MESH_UP_GATEWAY:-127.0.0.1:8080}
if [ -n "${MESH_NATS_CREDS_FILE:-}" ]; then url="https://$gw/readyz"; ca=(--cacert "$state/certs/ca.pem"); else url="http://$gw/readyz"; ca=(); fi
code=$(curl -s "${ca[@]+"${ca[@]}"}" -o /dev/null -w '%{http_code}' "$url" 2>/dev/null)
echo "gateway $url: ${code/000/not reachable}"
for i in 1 2; do
  sock="$state/nodes/node$i/run/wg-quazzar0.sock"
  [ -S "$sock" ] && echo "node$i wg-quazzar0: UAPI socket $sock"
done
exit 0
