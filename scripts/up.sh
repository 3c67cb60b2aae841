#!/usr/bin/env bash
# `make up`: the whole mesh on this machine, in one command, safe to run again.
#
#   NATS (JetStream) and PostgreSQL with their data under .mesh/, every control-plane service,
#   the gateway on MESH_UP_GATEWAY (default 127.0.0.1:8080), and two demo nodes, each NodeApplier
#   with wireguard-go in its own network namespace on a bridge, plus a demo tenant and admin.
#
# Settings (environment): MESH_UP_GATEWAY (127.0.0.1:8080), MESH_UP_SUBNET (10.201.0; the bridge
# is .1, nodes .11 and .12), MESH_UP_NATS_PORT (4222), MESH_UP_PG_PORT (5433), MESH_UP_PLAN (pro),
# MESH_UP_BUILD (release; "skip" to use what is built), MESH_UP_SECURE (0; 1 = TLS on the bus and
# HTTPS on the gateway, with per-identity bus credentials: certificates from scripts/gen-certs.sh and
# keys from `meshctl bus init`, kept in .mesh/certs and .mesh/bus; docs/security.md).
# Sign-in: the login link printed at the end always works. With MESH_UP_OIDC_PROVIDERS_FILE (a JSON
# array of OpenID Connect providers, docs/security.md "Sign-in") the page also offers sign-in through
# them; with MESH_UP_DEMO_IDP=1 a local test provider (Tests/oidc/test_provider.py) is started with a
# demo user who becomes an admin of the demo tenant. The callback to register at a provider is
# <gateway URL>/api/auth/callback.
# Logs: .mesh/logs/<name>.log. Stop with `make down`; see what runs with `make status`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
state="$root/.mesh"
gateway=${MESH_UP_GATEWAY:-127.0.0.1:8080}
subnet=${MESH_UP_SUBNET:-10.201.0}
bridge=mesh-demo-br
nats_port=${MESH_UP_NATS_PORT:-4222}
pg_port=${MESH_UP_PG_PORT:-5433}
plan=${MESH_UP_PLAN:-pro}
bin="$root/.build/release"
tenant_id=00000000-0000-4000-8000-00000000d3e0
admin_id=00000000-0000-4000-8000-0000000ad000
secure=${MESH_UP_SECURE:-0}
mkdir -p "$state"/{logs,run,secrets,nodes}
if [ -f "$state/mode" ] && [ "$(cat "$state/mode")" != "$secure" ]; then
  echo "make up: .mesh/ was set up with MESH_UP_SECURE=$(cat "$state/mode"); run 'make down && rm -rf .mesh' to switch" >&2
  exit 1
fi
echo "$secure" > "$state/mode"

steps=9; n=0
step() { n=$((n + 1)); printf '\n[%d/%d] %s\n' "$n" "$steps" "$*"; }
fail() { echo "make up: FAILED: $1" >&2; [ -n "${2:-}" ] && echo "  log: $2" >&2 && tail -n 20 "$2" >&2 2>/dev/null; exit 1; }
running() { [ -f "$state/run/$1.pid" ] && kill -0 "$(cat "$state/run/$1.pid")" 2>/dev/null; }

step "installing what is missing"
scripts/deps.sh || fail "installing dependencies (scripts/deps.sh)"

step "building (release)"
if [ "${MESH_UP_BUILD:-release}" != skip ]; then
  swift build -c release --product meshctl > "$state/logs/build.log" 2>&1 || fail "swift build" "$state/logs/build.log"
  for p in AllocatorSvc ProvisionSvc FanoutSvc NodeApplier Gateway; do
    swift build -c release --product "$p" >> "$state/logs/build.log" 2>&1 || fail "swift build --product $p" "$state/logs/build.log"
  done
fi
for p in AllocatorSvc ProvisionSvc FanoutSvc NodeApplier Gateway meshctl; do
  [ -x "$bin/$p" ] || fail "$bin/$p is missing (build it, or unset MESH_UP_BUILD)"
done

step "network: bridge $bridge ($subnet.1/24)"
if ! ip link show "$bridge" >/dev/null 2>&1; then
  # A fixed MAC: a bridge otherwise takes its ports' lowest MAC, which changes as ports come and go.
  ip link add "$bridge" type bridge && ip link set "$bridge" address 02:6d:65:73:68:01 \
    && ip addr add "$subnet.1/24" dev "$bridge" && ip link set "$bridge" up \
    || fail "creating the bridge $bridge"
fi

step "NATS (JetStream) on $subnet.1:$nats_port and PostgreSQL on 127.0.0.1:$pg_port (data in .mesh/infra)"
nats_config=()
if [ "$secure" = 1 ]; then
  echo "  secured: TLS and per-identity credentials (.mesh/certs, .mesh/bus)"
  scripts/gen-certs.sh "$state/certs" --san "$subnet.1" > "$state/logs/certs.log" 2>&1 || fail "making certificates" "$state/logs/certs.log"
  if [ ! -f "$state/bus/nats.conf" ]; then
    "$bin/meshctl" bus init --out "$state/bus" --tls-cert "$state/certs/nats.pem" --tls-key "$state/certs/nats.key" \
      > "$state/logs/bus-init.log" 2>&1 || fail "meshctl bus init" "$state/logs/bus-init.log"
  fi
  nats_config=(MESH_NATS_CONFIG="$state/bus/nats.conf")
fi
env "${nats_config[@]+"${nats_config[@]}"}" MESH_NATS_HOST="$subnet.1" MESH_NATS_PORT=$nats_port MESH_PG_PORT=$pg_port \
  scripts/infra.sh start "$state/infra" --durable > "$state/logs/infra.log" 2>&1 || fail "starting NATS or PostgreSQL" "$state/logs/infra.log"
# shellcheck disable=SC1091
source "$state/infra/env"
nats_url=$MESH_NATS_URL
if ! psql "$MESH_DATABASE_URL" -tAc "SELECT 1 FROM pg_database WHERE datname = 'mesh'" | grep -q 1; then
  psql "$MESH_DATABASE_URL" -qc "CREATE DATABASE mesh" || fail "creating the database"
fi
db_url="${MESH_DATABASE_URL%/postgres}/mesh"
if [ ! -s "$state/secrets/jwt-secret" ]; then
  (umask 077; head -c 48 /dev/urandom | base64 -w0 > "$state/secrets/jwt-secret")
fi
export MESH_NATS_URL=$nats_url MESH_DATABASE_URL=$db_url MESH_JWT_SECRET_FILE="$state/secrets/jwt-secret"
# Per-executable bus identities (secure mode only); empty otherwise.
creds() { [ "$secure" = 1 ] && echo "MESH_NATS_CREDS_FILE=$state/bus/creds/$1.creds" || echo "MESH_UNUSED=1"; }
if [ "$secure" = 1 ]; then
  export MESH_NATS_TLS_CA="$state/certs/ca.pem"
  provision_bus=(MESH_BUS_ACCOUNT_JWT_FILE="$state/bus/accounts/mesh.jwt" MESH_BUS_ACCOUNT_SIGNING_KEY_FILE="$state/bus/keys/mesh-signing.nk"
                 MESH_BUS_OPERATOR_SIGNING_KEY_FILE="$state/bus/keys/operator-signing.nk" MESH_BUS_SYSTEM_CREDS_FILE="$state/bus/creds/system.creds")
  gateway_tls=(MESH_GATEWAY_TLS_CERT="$state/certs/gateway.pem" MESH_GATEWAY_TLS_KEY="$state/certs/gateway.key")
  scheme=https
else
  provision_bus=(); gateway_tls=(); scheme=http
fi

start() { # name, then env assignments; starts .build/release/<name> in the background unless running
  local name=$1; shift
  if running "$name"; then echo "  $name: already running (pid $(cat "$state/run/$name.pid"))"; return; fi
  env MESH_INSTANCE="$name" "$@" nohup "$bin/${name%%-*}" >> "$state/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$state/run/$name.pid"
  echo "  $name: started (pid $!, log .mesh/logs/$name.log)"
}

step "control plane: AllocatorSvc, ProvisionSvc, FanoutSvc"
start AllocatorSvc MESH_METRICS_ADDRESS=127.0.0.1:9101 "$(creds allocator)"
start ProvisionSvc MESH_METRICS_ADDRESS=127.0.0.1:9102 "$(creds provision)" "${provision_bus[@]+"${provision_bus[@]}"}"
start FanoutSvc MESH_METRICS_ADDRESS=127.0.0.1:9103 "$(creds fanout)"
ctl() { env "$(creds admin)" "$bin/meshctl" "$@"; }
for _ in $(seq 1 100); do ctl tenant list >/dev/null 2>&1 && break; sleep 0.3; done
ctl tenant list >/dev/null 2>&1 || fail "the control plane does not answer" "$state/logs/ProvisionSvc.log"

step "demo tenant ($plan plan) and admin user"
out=$(ctl tenant create --name "Demo" --plan "$plan" --id "$tenant_id" 2>&1) || echo "$out" | grep -qi "already.\?exists" || fail "meshctl tenant create: $out"
out=$(ctl user create --tenant "$tenant_id" --name "Demo admin" --role admin --id "$admin_id" 2>&1) || echo "$out" | grep -qi "already.\?exists" || fail "meshctl user create: $out"
echo "  tenant $tenant_id, admin $admin_id"

step "demo nodes: NodeApplier + wireguard-go in network namespaces mesh-demo-node1, mesh-demo-node2"
mkdir -p /var/run/wireguard
for i in 1 2; do
  ns=mesh-demo-node$i
  ndir="$state/nodes/node$i"
  mkdir -p "$ndir/run"
  if ! ip netns list | grep -qw "$ns"; then
    ip netns add "$ns"
    ip link add "mdv$i" type veth peer name "mdp$i"
    ip link set "mdp$i" netns "$ns"
    ip link set "mdv$i" master "$bridge" up
    ip netns exec "$ns" ip addr add "$subnet.1$i/24" dev "mdp$i"
    ip netns exec "$ns" ip link set "mdp$i" up
    ip netns exec "$ns" ip link set lo up
  fi
  name=NodeApplier-node$i
  if running "$name"; then echo "  node$i: already running"; continue; fi
  token_env=()
  if [ ! -f "$ndir/node.json" ]; then
    token=$(ctl node enroll --tenant "$tenant_id" --admin "$admin_id" --uses 1) || fail "meshctl node enroll"
    token_env=(MESH_NODE_ENROLLMENT_TOKEN="$token")
  fi
  # Each node gets its own /var/run/wireguard (a bind mount in a private mount namespace), so both
  # can call their interface wg-quazzar0 as in production; the sockets live in .mesh/nodes/nodeN/run.
  env MESH_INSTANCE="node$i" MESH_NODE_NAME="node$i" MESH_NODE_STATE_DIR="$ndir" MESH_WG_INTERFACE=wg-quazzar0 \
      MESH_NODE_ENDPOINT="$subnet.1$i:51820" MESH_WG_BACKEND=userspace MESH_DNS_HOSTS_FILE="$ndir/hosts" "$(creds enroll)" \
      "${token_env[@]+"${token_env[@]}"}" \
      nohup ip netns exec "$ns" unshare --mount --propagation private \
      sh -c "mount --bind '$ndir/run' /var/run/wireguard && exec '$bin/NodeApplier'" >> "$state/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$state/run/$name.pid"
  echo "  node$i: started (log .mesh/logs/$name.log)"
done
for i in 1 2; do
  for _ in $(seq 1 150); do [ -f "$state/nodes/node$i/node.json" ] && break; sleep 0.2; done
  [ -f "$state/nodes/node$i/node.json" ] || fail "node$i did not register" "$state/logs/NodeApplier-node$i.log"
done
node1=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["nodeID"])' "$state/nodes/node1/node.json")

step "gateway on $scheme://$gateway"
signin=(); signin_note=""
providers_file=${MESH_UP_OIDC_PROVIDERS_FILE:-}
if [ "${MESH_UP_DEMO_IDP:-0}" = 1 ]; then
  demo_password_file="$state/secrets/demo-idp-password"
  [ -s "$demo_password_file" ] || (umask 077; head -c 12 /dev/urandom | base64 -w0 | tr -d '/+=' > "$demo_password_file")
  [ -s "$state/secrets/demo-idp-client-secret" ] || (umask 077; head -c 24 /dev/urandom | base64 -w0 | tr -d '/+=' > "$state/secrets/demo-idp-client-secret")
  idp_port=${MESH_UP_DEMO_IDP_PORT:-8099}
  if ! running demo-idp; then
    claims=$(printf '{"name":"Demo person","email":"demo@example.com","email_verified":true,"mesh_tenant":"%s","groups":["mesh-admins"]}' "$tenant_id")
    nohup "${MESH_VENV:-$root/.build-venv}/bin/python" Tests/oidc/test_provider.py --port "$idp_port" \
      --client "quazzar-mesh:$(cat "$state/secrets/demo-idp-client-secret"):$scheme://$gateway/api/auth/callback" \
      --user "demo:$(cat "$demo_password_file"):$claims" >> "$state/logs/demo-idp.log" 2>&1 < /dev/null &
    echo $! > "$state/run/demo-idp.pid"
    for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$idp_port/.well-known/openid-configuration" >/dev/null 2>&1 && break; sleep 0.2; done
  fi
  curl -fsS "http://127.0.0.1:$idp_port/.well-known/openid-configuration" >/dev/null 2>&1 || fail "the demo identity provider did not start" "$state/logs/demo-idp.log"
  providers_file="$state/demo-idp-providers.json"
  printf '[{"id":"demo","name":"Demo IdP","issuer":"http://127.0.0.1:%s","client_id":"quazzar-mesh","client_secret_file":"%s","tenant_claim":"mesh_tenant","admin_claim":"groups=mesh-admins"}]\n' \
    "$idp_port" "$state/secrets/demo-idp-client-secret" > "$providers_file"
  signin_note="Sign in:     with \"Demo IdP\" on the page: user demo, password $(cat "$demo_password_file") (local test provider, http://127.0.0.1:$idp_port)"
fi
if [ -n "$providers_file" ]; then
  [ -f "$providers_file" ] || fail "MESH_UP_OIDC_PROVIDERS_FILE=$providers_file does not exist"
  [ -s "$state/secrets/session-secret" ] || (umask 077; head -c 48 /dev/urandom | base64 -w0 > "$state/secrets/session-secret")
  signin=(MESH_OIDC_PROVIDERS_FILE="$providers_file" MESH_GATEWAY_PUBLIC_URL="$scheme://$gateway" MESH_SESSION_SECRET_FILE="$state/secrets/session-secret")
  [ -n "$signin_note" ] || signin_note="Sign in:     through the providers of $providers_file (callback: $scheme://$gateway/api/auth/callback)"
fi
start Gateway MESH_GATEWAY_ADDRESS="$gateway" MESH_GATEWAY_NODE_ID="$node1" MESH_METRICS_ADDRESS= "$(creds gateway)" \
  "${gateway_tls[@]+"${gateway_tls[@]}"}" "${signin[@]+"${signin[@]}"}"
curl_ca=(); [ "$secure" = 1 ] && curl_ca=(--cacert "$state/certs/ca.pem")
for _ in $(seq 1 100); do curl -fsS "${curl_ca[@]+"${curl_ca[@]}"}" "$scheme://$gateway/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fsS "${curl_ca[@]+"${curl_ca[@]}"}" "$scheme://$gateway/readyz" >/dev/null 2>&1 || fail "the gateway is not ready" "$state/logs/Gateway.log"

step "ready"
token=$("$bin/meshctl" token user --tenant "$tenant_id" --user "$admin_id" --role admin --ttl 86400)
cat <<MSG

Quazzar Mesh is running.

  Web page:    $scheme://$gateway/vpn/mesh/#token=$token
               (the token is in the URL fragment, which never reaches the server's logs; valid 24 h)$( [ -n "$signin_note" ] && printf '\n  %s' "$signin_note")
  API:         $scheme://$gateway/api/mesh/...   (docs/api.md, $scheme://$gateway/openapi.json)$( [ "$secure" = 1 ] && printf '\n               TLS: trust %s (curl --cacert)' "$state/certs/ca.pem")
  Nodes:       node1 $subnet.11:51820 and node2 $subnet.12:51820 (mesh DNS on their mesh addresses)

Add a device from the page (Add device → type → label → Generate, then scan the QR with the
WireGuard app or download the .conf), or with curl:

  export TOKEN='$token'
  curl -s ${curl_ca[*]:-} -X POST $scheme://$gateway/api/mesh/devices -H "Authorization: Bearer \$TOKEN" \\
       -H 'Content-Type: application/json' -d '{"label":"My laptop","type":"laptop"}' | python3 -m json.tool
  curl -s ${curl_ca[*]:-} $scheme://$gateway/api/mesh/devices -H "Authorization: Bearer \$TOKEN"

Admin CLI:  MESH_NATS_URL=$nats_url MESH_JWT_SECRET_FILE=$state/secrets/jwt-secret $( [ "$secure" = 1 ] && echo "MESH_NATS_TLS_CA=$state/certs/ca.pem MESH_NATS_CREDS_FILE=$state/bus/creds/admin.creds ")\
            .build/release/meshctl --help
Logs:       .mesh/logs/        Status: make status        Stop: make down
MSG
