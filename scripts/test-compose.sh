#!/usr/bin/env bash
# End-to-end test of the compose cluster (compose/docker-compose.yml) on a real Docker engine.
#
#   scripts/test-compose.sh          # part of `make test` (scripts/test-extra.sh runs it)
#
# It starts the engine (scripts/docker-engine.sh), builds the images (scripts/compose-images.sh
# prebuilt, from the host's build in .build/debug; MESH_COMPOSE_BINARIES names another folder,
# MESH_COMPOSE_IMAGES=keep uses the images already there), brings the cluster up under a project
# name of its own, and checks, with a deadline on every wait:
#   - every container becomes healthy; the one-shot set-up job succeeds;
#   - a device created through nginx over HTTPS gets a config; the config, brought up with
#     wireguard-go in a network namespace plugged into the compose network's bridge, pings every
#     node over IPv4 and IPv6, and resolves device and node names through each node's mesh DNS;
#   - the API shows the device online;
#   - under a load of device creations and deletions through nginx, a crash (SIGKILL of the main
#     process) of a ProvisionSvc container and of a node container: both come back by their restart policy, every request
#     gets an answer, every node's peers equal the tenant's devices and other nodes, and the device
#     pings every node again;
#   - `docker-compose down -v` leaves no container, network or volume of the project, and the test
#     removes its namespace and veth.
# Prints one line per check, the figures it measured, and "N passed, N failed"; exits non-zero on
# any failure. Everything it creates is named after a random id, so runs never meet.
set -uo pipefail
cd "$(dirname "$0")/.."
# Debian's docker client, which matches its engine (another client may come first in PATH).
if [ -x /usr/bin/docker ]; then docker() { /usr/bin/docker "$@"; }; fi
root=$(pwd)

id=$(head -c 3 /dev/urandom | od -An -tx1 | tr -d ' \n')
project="mqc$id"
ns="mq-cmp-$id"
veth="vmc$id"
wgif="wqc$id"
out="$root/.test-output/compose"
mkdir -p "$out"
tenant=00000000-0000-4000-8000-00000000d3e0
admin=00000000-0000-4000-8000-0000000ad000
passed=0 failed=0

ok()   { passed=$((passed + 1)); echo "ok   - $*"; }
bad()  { failed=$((failed + 1)); echo "FAIL - $*" >&2; }
check() { local name=$1; shift; if "$@"; then ok "$name"; else bad "$name"; fi; }
figure() { echo "figure: $*" | tee -a "$out/figures.txt"; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }
# wait_until SECONDS COMMAND...: runs COMMAND every 0.5 s until it succeeds or the deadline passes.
wait_until() {
  local deadline=$(( $(date +%s) + $1 )); shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.5
  done
}
finish() {
  echo
  echo "compose: $passed passed, $failed failed"
  echo "$passed passed, $failed failed"
  [ "$failed" = 0 ]
}

dc() { docker-compose -p "$project" -f compose/docker-compose.yml "$@"; }
# The id of a service's container (docker's own labels: quicker than asking docker-compose).
container() {
  docker ps -aq --filter "label=com.docker.compose.project=$project" --filter "label=com.docker.compose.service=$1" | head -1
}
meshctl_job() { dc run --rm --no-deps -T setup /usr/local/bin/meshctl "$@" 2>/dev/null; }

torn_down=0
teardown() {
  [ "$torn_down" = 1 ] && return
  torn_down=1
  [ -n "${load_pid:-}" ] && kill "$load_pid" 2>/dev/null
  if ip netns list | grep -qw "$ns"; then
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  fi
  rm -f "/var/run/wireguard/$wgif.sock"
  rm -rf "/etc/netns/$ns"
  ip link del "$veth" 2>/dev/null
  dc logs --no-color >"$out/cluster.log" 2>&1 || true
  dc down -v --remove-orphans >/dev/null 2>&1 || true
}
trap teardown EXIT
trap "exit 143" TERM INT

# --- the engine and the images ------------------------------------------------------------------
if ! scripts/docker-engine.sh start; then bad "the Docker engine starts and leaves the host's forwarding alone"; finish; exit 1; fi
ok "the Docker engine runs; the host's forwarding state is unchanged and namespaces on a bridge still reach each other"
meshctl=${MESHCTL:-$root/${MESH_COMPOSE_BINARIES:-.build/debug}/meshctl}
MESHCTL=$meshctl scripts/compose-secrets.sh >/dev/null || { bad "compose secrets"; finish; exit 1; }
if [ "${MESH_COMPOSE_IMAGES:-build}" != keep ]; then
  if ! scripts/compose-images.sh prebuilt "${MESH_COMPOSE_BINARIES:-.build/debug}"; then
    bad "images build"; finish; exit 1
  fi
fi

# Host ports the cluster publishes: free ones, so that nothing else on the machine is in the way.
free_port() { python3 "$(dirname "${BASH_SOURCE[0]}")/free-port.py" "$@"; }
https_port=$(free_port tcp); udp1=$(free_port udp); udp2=$(free_port udp)
while [ "$udp2" = "$udp1" ]; do udp2=$(free_port udp); done
export MESH_COMPOSE_HTTPS="127.0.0.1:$https_port" MESH_COMPOSE_NODE1_UDP="127.0.0.1:$udp1" MESH_COMPOSE_NODE2_UDP="127.0.0.1:$udp2"
api="https://localhost:$https_port"
ca="$root/compose/secrets/certs/ca.pem"

# --- cold start -----------------------------------------------------------------------------------
long_running=(nats-1 nats-2 nats-3 postgres allocator-1 allocator-2 provision-1 provision-2 fanout-1 fanout-2
              gateway-1 gateway-2 proxy node-1 node-2)
all_healthy() {
  local ids healthy
  ids=$(docker ps -q --filter "label=com.docker.compose.project=$project")
  [ -n "$ids" ] || return 1
  # shellcheck disable=SC2086
  healthy=$(docker inspect -f '{{.Config.Labels}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' $ids | grep -c ' healthy$')
  [ "$healthy" = "${#long_running[@]}" ]
}
t_up=$(now)
if ! dc up -d --no-build >"$out/up.log" 2>&1; then
  cat "$out/up.log" >&2; bad "docker-compose up"; finish; exit 1
fi
if wait_until 300 all_healthy; then
  figure "cold start (docker-compose up -d) to every container healthy: $(since "$t_up") s"
  ok "all ${#long_running[@]} long-running containers are healthy (3 NATS, PostgreSQL, 2 of each service, nginx, 2 nodes)"
else
  for s in "${long_running[@]}"; do echo "  $s: $(docker inspect -f '{{.State.Status}} {{.State.Health.Status}}' "$(container "$s")" 2>/dev/null)"; done >&2
  bad "every container becomes healthy within 300 s"; finish; exit 1
fi
setup_exit() { [ "$(docker inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$(container setup)" 2>/dev/null)" = "exited 0" ]; }
check "the set-up job (tenant, admin, enrollment tokens) exited 0" wait_until 60 setup_exit

# --- a device through nginx -----------------------------------------------------------------------
token=$(MESH_JWT_SECRET_FILE=compose/secrets/jwt_secret "$meshctl" token user --tenant "$tenant" --user "$admin" --role admin --ttl 3600)
# curl_api METHOD PATH [BODY] [TOKEN]: prints "<status> <body>".
curl_api() {
  local body
  body=$(curl -sS --max-time 30 --cacert "$ca" -X "$1" -H "Authorization: Bearer ${4:-$token}" \
              -H 'Content-Type: application/json' ${3:+--data "$3"} -w '\n%{http_code}' "$api$2" 2>/dev/null) || { echo "000 "; return; }
  echo "${body##*$'\n'} ${body%$'\n'*}"
}
created=$(curl_api POST /api/mesh/devices '{"label": "compose laptop", "type": "laptop"}')
status=${created%% *}; created=${created#* }
check "POST /api/mesh/devices through nginx (HTTPS) answers 201 (got $status)" [ "$status" = 201 ]
[ "$status" = 201 ] || { finish; exit 1; }
device_id=$(jq -r .id <<<"$created")
device_dns=$(jq -r .dns_name <<<"$created")
device_v4=$(jq -r '.mesh_ips[] | select(contains(".")) ' <<<"$created")
device_v6=$(jq -r '.mesh_ips[] | select(contains(":")) ' <<<"$created")
jq -r .config <<<"$created" >"$out/device.conf"; chmod 600 "$out/device.conf"

# Nodes: their ids (meshctl, admin credentials, inside the compose network) and mesh addresses.
nodes_json=$(meshctl_job node list --tenant "$tenant" --as "$admin" --json)
node_count=$(jq '.nodes | length' <<<"$nodes_json" 2>/dev/null || echo 0)
check "both nodes are registered (meshctl node list: $node_count)" [ "$node_count" = 2 ]
mapfile -t node_ids < <(jq -r '.nodes[].id' <<<"$nodes_json" 2>/dev/null)
# The config's node peers: "AllowedIPs = v4/32, v6/128[, device ranges]" per node.
mapfile -t node_v4 < <(awk -F' = ' '/^AllowedIPs/ {split($2, a, ", "); sub("/32", "", a[1]); print a[1]}' "$out/device.conf")
mapfile -t node_v6 < <(awk -F' = ' '/^AllowedIPs/ {split($2, a, ", "); sub("/128", "", a[2]); print a[2]}' "$out/device.conf")
check "the config lists every node (${#node_v4[@]} peers)" [ "${#node_v4[@]}" = 2 ]

# --- the device's namespace on the compose network ------------------------------------------------
network="${project}_default"
net_id=$(docker network inspect -f '{{.Id}}' "$network")
bridge="br-${net_id:0:12}"
subnet=$(docker network inspect -f '{{(index .IPAM.Config 0).Subnet}}' "$network")
gateway_ip=$(docker network inspect -f '{{(index .IPAM.Config 0).Gateway}}' "$network")
# An address near the top of the subnet: Docker hands out addresses from the bottom.
ns_addr=$(python3 -c "import ipaddress,sys; n=ipaddress.ip_network(sys.argv[1]); print(f'{n.broadcast_address - 6}/{n.prefixlen}')" "$subnet")
node_ip() { docker inspect -f "{{(index .NetworkSettings.Networks \"$network\").IPAddress}}" "$(container "$1")"; }
mkdir -p "/etc/netns/$ns"
write_hosts() { { echo "127.0.0.1 localhost"; for n in node-1 node-2; do echo "$(node_ip "$n") $n"; done; } >"/etc/netns/$ns/hosts"; }
write_hosts
# What `wg-quick strip` does: drop the keys wg(8) does not know.
grep -vE '^(Address|DNS|MTU) *=' "$out/device.conf" >"$out/device.wg"
setup_ns() {
  ip netns add "$ns" && ip -n "$ns" link set lo up \
  && ip link add "$veth" type veth peer name eth0 netns "$ns" \
  && ip link set "$veth" master "$bridge" up \
  && ip -n "$ns" addr add "$ns_addr" dev eth0 && ip -n "$ns" link set eth0 up \
  && ip -n "$ns" route add default via "$gateway_ip" \
  && ip netns exec "$ns" env WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 LOG_LEVEL=error wireguard-go "$wgif" \
  && wait_until 10 test -S "/var/run/wireguard/$wgif.sock" \
  && ip netns exec "$ns" wg setconf "$wgif" "$out/device.wg" \
  && ip -n "$ns" link set "$wgif" mtu "$(awk -F' = ' '/^MTU/ {print $2}' "$out/device.conf")" up \
  && for a in $(awk -F' = ' '/^Address/ {gsub(",", " ", $2); print $2}' "$out/device.conf"); do ip -n "$ns" addr add "$a" dev "$wgif" || return 1; done \
  && for p in $(awk -F' = ' '/^AllowedIPs/ {gsub(",", " ", $2); print $2}' "$out/device.conf"); do ip -n "$ns" route replace "$p" dev "$wgif" || return 1; done
}
check "the device's config is up with wireguard-go in namespace $ns on the compose bridge ($ns_addr)" setup_ns

ping_all() {
  local i rc=0
  for i in "${!node_v4[@]}"; do
    ip netns exec "$ns" ping -c 1 -W 2 "${node_v4[$i]}" >/dev/null 2>&1 || rc=1
    ip netns exec "$ns" ping -6 -c 1 -W 2 "${node_v6[$i]}" >/dev/null 2>&1 || rc=1
  done
  return $rc
}
t_ping=$(now)
if wait_until 60 ping_all; then
  ok "the device pings every node over the tunnel: ${node_v4[*]} ${node_v6[*]}"
  figure "device config up to every node answering pings over IPv4 and IPv6: $(since "$t_ping") s"
else
  bad "the device pings every node over IPv4 and IPv6 within 60 s (${node_v4[*]} ${node_v6[*]})"
fi

# Mesh DNS: each node answers for the device and for the nodes, A and AAAA.
dns_ok() {
  local server=$1 name=$2 type=$3 want=$4
  [ "$(ip netns exec "$ns" dig +short +time=2 +tries=1 "@$server" "$name" "$type" 2>/dev/null)" = "$want" ]
}
for i in "${!node_v4[@]}"; do
  s=${node_v4[$i]}
  check "mesh DNS on $s: $device_dns A is $device_v4" wait_until 30 dns_ok "$s" "$device_dns" A "$device_v4"
  check "mesh DNS on ${node_v6[$i]}: $device_dns AAAA is $device_v6" wait_until 30 dns_ok "${node_v6[$i]}" "$device_dns" AAAA "$device_v6"
done
check "mesh DNS: node-1.quazzar.mesh and node-2.quazzar.mesh resolve to node addresses" \
  bash -c "for n in node-1 node-2; do a=\$(ip netns exec $ns dig +short +time=2 +tries=1 @${node_v4[0]} \$n.quazzar.mesh A); case ' ${node_v4[*]} ' in *\" \$a \"*) ;; *) exit 1;; esac; done"

device_online() { [ "$(curl_api GET /api/mesh/devices | cut -d' ' -f2- | jq -r --arg id "$device_id" '.devices[] | select(.id == $id) | .online')" = true ]; }
check "GET /api/mesh/devices shows the device online" wait_until 60 device_online

# --- kills under load -------------------------------------------------------------------------------
# Load: users of the tenant create and delete devices through nginx (each user stays inside the
# rate limit of 5 creations a minute; the tenant inside the Pro cap of 20).
mapfile -t load_users < <(for i in 1 2 3; do meshctl_job user create --tenant "$tenant" --name "load $i" --role owner; done)
check "three load users created (meshctl user create)" [ "${#load_users[@]}" = 3 ]
load() {
  local u=$1 t i r s body ids=()
  t=$(MESH_JWT_SECRET_FILE=compose/secrets/jwt_secret "$meshctl" token user --tenant "$tenant" --user "$u" --ttl 3600)
  for i in 1 2 3 4 5; do
    r=$(curl_api POST /api/mesh/devices "{\"label\": \"load $u $i\"}" "$t"); s=${r%% *}; body=${r#* }
    echo "create $s"
    [ "$s" = 201 ] && ids+=("$(jq -r .id <<<"$body")")
    sleep 2
    if [ $((i % 2)) = 0 ] && [ ${#ids[@]} -gt 0 ]; then
      r=$(curl_api DELETE "/api/mesh/devices/${ids[0]}" "" "$t"); echo "delete ${r%% *}"; ids=("${ids[@]:1}")
      sleep 2
    fi
  done
}
: >"$out/load.txt"
( for u in "${load_users[@]}"; do load "$u" & done; wait ) >>"$out/load.txt" 2>&1 &
load_pid=$!
sleep 4
svc=provision-1 nd=node-2
svc_c=$(container $svc) nd_c=$(container $nd)
# A crash, as Docker sees one: the container's main process dies of SIGKILL. (`docker kill` itself
# is a deliberate stop to Docker, after which no restart policy restarts the container; see
# docs/deployment.md.)
t_kill=$(now)
kill -KILL "$(docker inspect -f '{{.State.Pid}}' "$svc_c")" "$(docker inspect -f '{{.State.Pid}}' "$nd_c")"
ok "killed (SIGKILL) the main process of $svc and of $nd mid-load"
back() { [ "$(docker inspect -f '{{.State.Running}} {{.State.Health.Status}}' "$1")" = "true healthy" ] \
         && [ "$(docker inspect -f '{{.RestartCount}}' "$1")" -ge 1 ]; }
check "$svc restarted by its restart policy and healthy again" wait_until 120 back "$svc_c"
figure "$svc: SIGKILL to restarted and healthy again: $(since "$t_kill") s"
check "$nd restarted by its restart policy and healthy again" wait_until 120 back "$nd_c"
figure "$nd: SIGKILL to restarted and healthy again: $(since "$t_kill") s"
wait "$load_pid"; load_pid=
figure "the load ended $(since "$t_kill") s after the kills"
t_load_end=$(now)
outcomes=$(sort "$out/load.txt" | uniq -c | awk '{printf "%s%s x%s", sep, $2" "$3, $1; sep=", "}')
figure "load during the kills: $outcomes"
# Every request got an answer: 201/204, or a typed refusal (429, 403 quota) or 503/504 for the
# requests the killed replica held; never no answer (000), 500 or 502.
all_answered() { ! grep -qE ' (000|500|502)$' "$out/load.txt"; }
check "every load request got an answer (no 000, 500 or 502): $outcomes" all_answered

# Convergence: every node's WireGuard peers are exactly the tenant's devices and the other nodes.
converged() {
  local devices want n got
  devices=$(curl_api GET /api/mesh/devices | cut -d' ' -f2- | jq -r '.devices[].id' | sort) || return 1
  [ -n "$devices" ] || return 1
  for n in "${node_ids[@]}"; do
    want=$( { echo "$devices"; printf '%s\n' "${node_ids[@]}" | grep -v "^$n\$"; } | sort)
    got=$(curl_api GET "/api/mesh/peers?node_id=$n" | cut -d' ' -f2- | jq -r '.peers[].peer_id' | sort) || return 1
    [ "$want" = "$got" ] || return 1
  done
}
if wait_until 120 converged; then
  ok "every node's peers equal the tenant's devices and other nodes after the kills"
  figure "every node converged $(since "$t_load_end") s after the load ended ($(since "$t_kill") s after the kills)"
else
  bad "every node converges to the device list within 120 s of the load's end"
fi
# A restarted container may come back with another address; like a client that resolves its
# endpoints again, the device re-reads the names.
old_hosts=$(cat "/etc/netns/$ns/hosts"); write_hosts
[ "$old_hosts" = "$(cat "/etc/netns/$ns/hosts")" ] || echo "note: a node's address changed with its restart"
ip netns exec "$ns" wg setconf "$wgif" "$out/device.wg"
check "the device pings every node again after the kills" wait_until 60 ping_all

# --- down -v leaves nothing -------------------------------------------------------------------------
teardown
leftover() {
  docker ps -aq --filter "label=com.docker.compose.project=$project"
  docker network ls -q --filter "label=com.docker.compose.project=$project"
  docker volume ls -q --filter "label=com.docker.compose.project=$project"
  ip netns list | grep -w "$ns"
  ip link show "$veth" 2>/dev/null
  ls "/etc/netns/$ns" "/var/run/wireguard/$wgif.sock" 2>/dev/null
  ip -o link show type bridge | grep -o "br-${net_id:0:12}"
}
left=$(leftover)
check "docker-compose down -v leaves no container, network, volume, namespace, veth or bridge${left:+ (left: $left)}" [ -z "$left" ]
finish
