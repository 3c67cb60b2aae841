#!/usr/bin/env bash
# `make up` as a user runs it, then broken on purpose (part of `make test`, from scripts/test-extra.sh):
#
#   1. scripts/up.sh with a state folder, names, subnet and ports of its own (so it never touches a
#      real `make up` or another run), on the executables `make test` built (MESH_UP_BIN=.build/debug);
#   2. the bus is closed: from a namespace on the demo bridge (a device's underlay), a NATS client
#      without credentials is refused (meshctl over TLS, and a bare CONNECT with and without TLS);
#   3. a device created through the gateway reaches both nodes' WireGuard interfaces, which hold
#      their key, port and every peer, and carry traffic between the nodes;
#   4. every supervised program is killed with SIGKILL in turn: supervisord starts it again,
#      `make status` shows the restart and "terminated by SIGKILL", and both nodes are whole again
#      with a new device (a wireguard-go killed takes its interface with it: NodeApplier notices,
#      stops, and is started again to set the interface up again);
#   5. supervisord itself is killed with SIGKILL (its programs live on without it, and it stays a
#      zombie until init reaps it): `make up` does not take it for running, stops the orphans, and
#      brings everything back;
#   6. `make up` once more changes nothing (no program is started again);
#   7. `make down` leaves no process, namespace or bridge behind.
#
# Prints how long each restart and each recovery took. Exits non-zero on the first failure.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bin=${MESH_UP_TEST_BIN:-$root/.build/debug}
tag=$(tr -dc 'a-z0-9' </dev/urandom | head -c 4)
free_port() { python3 "$(dirname "${BASH_SOURCE[0]}")/free-port.py"; }
state=$(mktemp -d /tmp/mesh-up-test-XXXXXX)
subnet="10.$((RANDOM % 90 + 150)).$((RANDOM % 250 + 1))"
gw_port=$(free_port)
export MESH_UP_NAME="mu$tag" MESH_UP_STATE="$state" MESH_UP_SUBNET="$subnet" MESH_UP_NATS_PORT=$(free_port) \
       MESH_UP_PG_PORT=$(free_port) MESH_UP_GATEWAY="127.0.0.1:$gw_port" MESH_UP_METRICS_PORT=off MESH_UP_BIN="$bin" \
       MESH_UP_PLAN=enterprise MESH_RATE_LIMIT=0
devns="mu$tag-dev"
sv() { supervisorctl -c "$state/supervisor/supervisord.conf" "$@"; }
log() { printf '[test-up] %s\n' "$*"; }
die() { log "FAILED: $*"; exit 1; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{(float(sys.argv[2]) - float(sys.argv[1])) * 1000:.0f} ms')" "$1" "$(now)"; }

cleanup() {
  scripts/down.sh > "$state/down-cleanup.log" 2>&1 || true
  ip netns del "$devns" 2>/dev/null || true
  local pg; pg=$(cat "$state/pgdir" 2>/dev/null || true)
  case "$pg" in /var/lib/quazzar-mesh/up-*) rm -rf "$(dirname "$pg")" ;; esac
  rm -rf "$state"
}
trap cleanup EXIT

for p in AllocatorSvc ProvisionSvc FanoutSvc NodeApplier Gateway meshctl; do
  [ -x "$bin/$p" ] || die "$bin/$p is missing: build first (swift build --build-tests)"
done

# 1. make up
log "make up in $state (names mu$tag-*, subnet $subnet.0/24)"
scripts/up.sh > "$state/up.log" 2>&1 || { tail -n 40 "$state/up.log"; die "make up"; }
grep -q "Quazzar Mesh is running (bus: TLS" "$state/up.log" || die "make up did not say the bus is secured: $(tail -n 5 "$state/up.log")"
programs=$(sv status | awk '{print $1}')
[ "$(echo "$programs" | wc -l)" = 10 ] || die "expected 10 supervised programs, got: $programs"
sv status | awk '$2 != "RUNNING" {bad=1; print} END {exit bad}' || die "not every program is RUNNING"
# shellcheck disable=SC1091
source "$state/env"
token=$("$MESHCTL" token user --tenant 00000000-0000-4000-8000-00000000d3e0 --user 00000000-0000-4000-8000-0000000ad000 --role admin --ttl 3600) \
  || die "meshctl token user"

# 2. the bus is closed to a device's underlay
ip netns add "$devns"
ip link add "mu$tag-vd" type veth peer name "mu$tag-pd"
ip link set "mu$tag-pd" netns "$devns"
ip link set "mu$tag-vd" master "mu$tag-br" up
ip netns exec "$devns" ip addr add "$subnet.50/24" dev "mu$tag-pd"
ip netns exec "$devns" ip link set "mu$tag-pd" up
ip netns exec "$devns" ip link set lo up
out=$(ip netns exec "$devns" env -u MESH_NATS_CREDS_FILE MESH_NATS_URL="nats://$subnet.1:$MESH_UP_NATS_PORT" \
      MESH_NATS_TLS_CA="$state/certs/ca.pem" timeout 30 "$MESHCTL" tenant list --timeout 3 2>&1) \
  && die "meshctl without credentials listed tenants from a device's underlay: $out"
log "underlay, meshctl without credentials: refused ($(echo "$out" | tail -n 1))"
raw=$(ip netns exec "$devns" python3 - "$subnet.1" "$MESH_UP_NATS_PORT" "$state/certs/ca.pem" <<'PY'
import socket, ssl, sys
host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def exchange(use_tls):
    s = socket.create_connection((host, port), timeout=5)
    info = s.recv(4096).decode(errors="replace")
    if use_tls:
        s = ssl.create_default_context(cafile=ca).wrap_socket(s, server_hostname=host)
    try:
        s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n')
        reply = s.recv(4096).decode(errors="replace").strip()
    except OSError as e:
        reply = f"connection closed ({e.__class__.__name__})"
    return info, reply or "connection closed"
info, plain = exchange(False)
_, tls = exchange(True)
ok = '"auth_required":true' in info and '"tls_required":true' in info and "PONG" not in plain and "Authorization Violation" in tls
print(f"plain: {plain!r}; TLS without credentials: {tls!r}")
sys.exit(0 if ok else 1)
PY
) || die "a bare CONNECT from the underlay was not refused: $raw"
log "underlay, bare CONNECT: refused ($raw)"

# 3. devices reach both nodes
node_peers() { # node number -> the public keys on its wg-quazzar0 (read with wg, through its UAPI socket)
  ip netns exec "mu$tag-node$1" unshare --mount --propagation private \
    sh -c "mount --bind '$state/nodes/node$1/run' /var/run/wireguard && wg show wg-quazzar0 peers" 2>/dev/null
}
create_device() { # label -> the new device's public key (from the config's private key)
  local body
  body=$(curl -s --max-time 30 --cacert "$state/certs/ca.pem" -X POST "$MESH_UP_GATEWAY_URL/api/mesh/devices" \
         -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d "{\"label\":\"$1\",\"type\":\"laptop\"}")
  python3 -c 'import json,sys; c=json.loads(sys.argv[1])["config"]; print([l.split("=",1)[1].strip() for l in c.splitlines() if l.startswith("PrivateKey")][0])' \
    "$body" 2>/dev/null | wg pubkey 2>/dev/null | grep .
}
node_ip() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ipv4"])' "$state/nodes/node$1/node.json"; }
device_count() {
  curl -s --max-time 10 --cacert "$state/certs/ca.pem" "$MESH_UP_GATEWAY_URL/api/mesh/devices" -H "Authorization: Bearer $token" \
    | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["devices"]))' 2>/dev/null
}
node_whole() { # node number, public key: its interface has its key and port, every peer (each device and
               # the other node), the new key among them, and it reaches the other node over the tunnel
  local dump want
  dump=$(ip netns exec "mu$tag-node$1" unshare --mount --propagation private \
         sh -c "mount --bind '$state/nodes/node$1/run' /var/run/wireguard && wg show wg-quazzar0 dump" 2>/dev/null) || return 1
  want=$(( $(device_count) + 1 ))
  echo "$dump" | head -1 | awk '$1 != "(none)" && $3 == 51820 {ok=1} END {exit !ok}' || return 1
  [ "$(echo "$dump" | tail -n +2 | wc -l)" = "$want" ] || return 1
  echo "$dump" | tail -n +2 | cut -f1 | grep -qxF "$2" || return 1
  ip netns exec "mu$tag-node$1" ping -c 1 -W 2 "$(node_ip $((3 - $1)))" > /dev/null 2>&1
}
works() { # label: the gateway creates a device and both nodes are whole again with it, within 120 s;
          # prints how long it took
  local start key; start=$(now)
  local deadline=$((SECONDS + 120))
  while [ $SECONDS -lt $deadline ]; do
    key=$(create_device "$1") || { sleep 0.5; continue; }
    while [ $SECONDS -lt $deadline ]; do
      node_whole 1 "$key" && node_whole 2 "$key" && { since "$start"; return 0; }
      sleep 0.2
    done
  done
  return 1
}
took=$(works "first laptop") || die "a device created through the gateway did not reach both nodes"
log "a new device reached both nodes in $took"

# 4. kill every program in turn
for p in $programs; do
  old=$(sv pid "$p")
  [ "$old" -gt 1 ] 2>/dev/null || die "$p has no pid: $(sv status "$p")"
  killed=$(now)
  kill -KILL "$old"
  restarted=""
  for _ in $(seq 1 600); do
    cur=$(sv pid "$p" 2>/dev/null)
    if [ "$(sv status "$p" | awk '{print $2}')" = RUNNING ] && [ "$cur" -gt 1 ] 2>/dev/null && [ "$cur" != "$old" ]; then
      restarted=$(since "$killed"); break
    fi
    sleep 0.1
  done
  [ -n "$restarted" ] || die "$p was not running again 60 s after SIGKILL: $(sv status "$p")"
  took=$(works "after killing $p") || { sv status; tail -n 30 "$state/logs/$p.log"; die "the system did not work again after $p was killed"; }
  status=$(scripts/status.sh 2>&1)
  echo "$status" | grep -E "^  $p " | grep -q "terminated by SIGKILL" || die "make status does not show $p's SIGKILL: $(echo "$status" | grep -E "^  $p ")"
  restarts=$(echo "$status" | awk -v p="$p" '$1 == p {print $5}')
  [ "${restarts:-0}" -ge 1 ] 2>/dev/null || die "make status shows no restart of $p: $(echo "$status" | grep -E "^  $p ")"
  log "SIGKILL $p: running again after $restarted (supervisor: RUNNING after startsecs=1), the system worked again after $took"
done
scripts/status.sh > "$state/status.log" 2>&1
sed -n '/program/,/namespaces/p' "$state/status.log" | sed 's/^/[test-up]   /'

# 5. supervisord killed: its programs live on, it is a zombie until reaped; make up recovers
svpid=$(sv pid)
before=$(for p in $programs; do sv pid "$p"; done)
kill -KILL "$svpid"
for _ in $(seq 1 50); do
  st=$(awk '{print $3}' "/proc/$svpid/stat" 2>/dev/null) || break
  [ "$st" = Z ] && break
  sleep 0.1
done
log "supervisord (pid $svpid) killed; its state now: ${st:-reaped}"
scripts/up.sh > "$state/up2.log" 2>&1 || { tail -n 40 "$state/up2.log"; die "make up after supervisord was killed"; }
grep -q "left from a supervisord that is gone" "$state/up2.log" || die "make up did not stop the programs its killed supervisord left"
sv status | awk '$2 != "RUNNING" {bad=1; print} END {exit bad}' || die "not every program is RUNNING after make up"
for pid in $before; do
  st=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
  [ -z "$st" ] || [ "$st" = Z ] || die "pid $pid of the old supervisord still runs ($(tr '\0' ' ' < "/proc/$pid/cmdline"))"
done
took=$(works "after supervisord was killed") || die "the system did not work after make up replaced a killed supervisord"
log "make up replaced the killed supervisord and every program; the system worked again after $took"

# 6. make up again: nothing restarts
spawns=$(grep -c "spawned:" "$state/logs/supervisord.log")
scripts/up.sh > "$state/up3.log" 2>&1 || { tail -n 40 "$state/up3.log"; die "make up run again"; }
[ "$(grep -c "spawned:" "$state/logs/supervisord.log")" = "$spawns" ] || die "make up run again started programs again"
log "make up run again: no program started again"

# 7. make down
ip netns del "$devns"
scripts/down.sh > "$state/down.log" 2>&1 || die "make down"
left=$(for f in /proc/[0-9]*/environ; do tr '\0' '\n' 2>/dev/null < "$f" | grep -qxF "MESH_UP_SUPERVISED=$state" && echo "${f//[!0-9]/}"; done)
for pid in $left; do
  st=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
  [ -z "$st" ] || [ "$st" = Z ] || die "make down left pid $pid running"
done
ip netns list | grep -q "^mu$tag-" && die "make down left a namespace"
ip link show "mu$tag-br" > /dev/null 2>&1 && die "make down left the bridge"
log "make down stopped everything"
log "passed"
