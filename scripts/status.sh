#!/usr/bin/env bash
# `make status`: every process `make up` runs (as its supervisor sees it: state, pid, uptime, how
# often it was restarted and why it last exited), the bus mode, the nodes and devices, the gateway.
# Same settings as scripts/up.sh (MESH_UP_STATE, MESH_UP_NAME, ...).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# shellcheck source=scripts/up-lib.sh
source scripts/up-lib.sh
[ -d "$state" ] && [ -f "$sv_conf" ] || { echo "nothing started yet: run make up"; exit 0; }

if [ "$(cat "$state/mode" 2>/dev/null)" = 0 ]; then
  echo "bus: OPEN (MESH_UP_SECURE=0, for debugging only: anything that reaches NATS can act on the mesh)"
else
  echo "bus: TLS, and a credential per process"
fi

if ! sv_running; then
  echo "supervisor: not running (make up starts it)"
  left=$(up_processes)
  [ -n "$left" ] && echo "  processes of this state folder without a supervisor: $(echo $left)"
else
  echo "supervisor: supervisord pid $(sv_ctl pid), $sv_conf"
  # Restarts and exit reasons in supervisord's own words, from its log since it last started.
  python3 - "$state/logs/supervisord.log" "$(sv_ctl status 2>/dev/null)" <<'PY'
import re, sys
log_path, status = sys.argv[1], sys.argv[2]
lines = []
try:
    with open(log_path, errors="replace") as f:
        lines = f.read().splitlines()
except OSError:
    pass
# Only what happened since supervisord's last start.
for i in range(len(lines) - 1, -1, -1):
    if "supervisord started with pid" in lines[i]:
        lines = lines[i:]
        break
spawns, last_exit, crashes = {}, {}, {}
for line in lines:
    m = re.match(r"(\S+ \S+) \w+ spawned: '([^']+)' with pid", line)
    if m:
        spawns[m.group(2)] = spawns.get(m.group(2), 0) + 1
        continue
    m = re.match(r"(\S+ \S+) \w+ (exited|stopped|gave up): (\S+) \(?(.*?)\)?$", line)
    if m:
        when, what, name, why = m.groups()
        when = when.split(",")[0]
        if what == "gave up":
            why = "gave up: " + why
        last_exit[name] = f"{why} at {when}"
        if what == "exited" and "not expected" in why:
            crashes[name] = crashes.get(name, 0) + 1
print(f"  {'program':<22} {'state':<9} {'pid':<8} {'uptime':<10} {'restarts':<9} last exit")
for row in status.splitlines():
    parts = row.split(None, 2)
    if len(parts) < 2:
        continue
    name, st = parts[0], parts[1]
    m = re.search(r"pid (\d+), uptime (\S+)", parts[2] if len(parts) > 2 else "")
    pid, uptime = (m.group(1), m.group(2)) if m and st == "RUNNING" else ("-", "-")
    restarts = max(spawns.get(name, 0) - 1, 0)
    print(f"  {name:<22} {st:<9} {pid:<8} {uptime:<10} {restarts:<9} {last_exit.get(name, '-')}")
PY
fi

echo "namespaces:"; ip netns list 2>/dev/null | awk '{print $1}' | grep "^$up_name-node" | sed 's/^/  /'
if [ -f "$state/env" ] && sv_running && [ "$(sv_ctl status nats 2>/dev/null | awk '{print $2}')" = RUNNING ]; then
  # shellcheck disable=SC1091
  source "$state/env"
  echo "nodes (as the demo admin):"
  "$MESHCTL" node list --timeout 3 --tenant 00000000-0000-4000-8000-00000000d3e0 --as 00000000-0000-4000-8000-0000000ad000 2>&1 | sed 's/^/  /'
  echo "devices:"
  "$MESHCTL" device list --timeout 3 --tenant 00000000-0000-4000-8000-00000000d3e0 --as 00000000-0000-4000-8000-0000000ad000 2>&1 | sed 's/^/  /'
  ca=(); [ "${MESH_UP_SECURE:-1}" = 1 ] && ca=(--cacert "$state/certs/ca.pem")
  code=$(curl -s "${ca[@]+"${ca[@]}"}" -o /dev/null -w '%{http_code}' "$MESH_UP_GATEWAY_URL/readyz" 2>/dev/null)
  echo "gateway $MESH_UP_GATEWAY_URL/readyz: ${code/000/not reachable}"
fi
exit 0
