#!/usr/bin/env bash
# `make up`: the whole mesh on this machine, in one command, safe to run again, from any folder.
#
#   NATS and PostgreSQL with their data in the state folder, every control-plane service, the
#   gateway on MESH_UP_GATEWAY (default 127.0.0.1:8080), and two demo nodes, each a NodeApplier and
#   a wireguard-go in its own network namespace on a bridge; plus a demo tenant and admin.
#
# Every process runs under supervisord (Debian's `supervisor`), which starts a crashed one again
# within seconds; `make status` shows each process, its restarts and its last exit reason, and
# `make down` stops everything. The bus is closed by default: TLS and a credential of its own for
# every process (docs/security.md); a device's underlay cannot talk to NATS without one.
#
# Settings (environment):
#   MESH_UP_SECURE        1 (default): TLS on the bus and HTTPS on the gateway, per-identity bus
#                         credentials (certificates from scripts/gen-certs.sh, keys from `meshctl bus
#                         init`, in <state>/certs and <state>/bus). 0: an OPEN bus, for debugging
#                         only: anything that reaches the NATS port, a device's underlay included,
#                         can list tenants, create devices and forge peer updates.
#   MESH_UP_GATEWAY       127.0.0.1:8080        MESH_UP_SUBNET     10.201.0 (bridge .1, nodes .11, .12)
#   MESH_UP_NATS_PORT     4222                  MESH_UP_PG_PORT    5433
#   MESH_UP_METRICS_PORT  9101 (services' /metrics on 9101-9103; "off" for none)
#   MESH_UP_PLAN          pro                   MESH_UP_BUILD      release | debug | skip (use .build/release)
#   MESH_UP_BIN           a folder of executables built already (then nothing is built)
#   MESH_UP_NAME          mesh-demo: names the bridge (<name>-br), the namespaces (<name>-node1, -node2)
#                         and the veth pairs (<name>-v1/-p1); at most 12 characters
#   MESH_UP_STATE         <checkout>/.mesh: data, keys, logs, supervisor files
# Sign-in: the login link printed at the end always works. With MESH_UP_OIDC_PROVIDERS_FILE (a JSON
# array of OpenID Connect providers, docs/security.md "Sign-in") the page also offers sign-in through
# them; with MESH_UP_DEMO_IDP=1 a local test provider (Tests/oidc/test_provider.py, port
# MESH_UP_DEMO_IDP_PORT, 8099) runs under the supervisor too, with a demo user who becomes an admin
# of the demo tenant. The callback to register at a provider is <gateway URL>/api/auth/callback.
# Logs: <state>/logs/<program>.log and supervisord.log. Stop with `make down`; see `make status`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# shellcheck source=scripts/up-lib.sh
source scripts/up-lib.sh

gateway=${MESH_UP_GATEWAY:-127.0.0.1:8080}
subnet=${MESH_UP_SUBNET:-10.201.0}
nats_port=${MESH_UP_NATS_PORT:-4222}
pg_port=${MESH_UP_PG_PORT:-5433}
metrics_port=${MESH_UP_METRICS_PORT:-9101}
plan=${MESH_UP_PLAN:-pro}
build=${MESH_UP_BUILD:-release}
secure=${MESH_UP_SECURE:-1}
tenant_id=00000000-0000-4000-8000-00000000d3e0
admin_id=00000000-0000-4000-8000-0000000ad000
case "$build" in release|skip) bin="$root/.build/release" ;; debug) bin="$root/.build/debug" ;;
  *) echo "make up: MESH_UP_BUILD must be release, debug or skip" >&2; exit 2 ;; esac
# MESH_UP_BIN: a folder of executables already built (nothing is built then), e.g. .build/debug.
[ -n "${MESH_UP_BIN:-}" ] && bin=$(cd "$MESH_UP_BIN" && pwd) && build=skip
case "$secure" in 0|1) ;; *) echo "make up: MESH_UP_SECURE must be 1 (default) or 0" >&2; exit 2 ;; esac
[ "${#up_name}" -le 12 ] || { echo "make up: MESH_UP_NAME must be at most 12 characters" >&2; exit 2; }
mkdir -p "$state"/{logs,run,secrets,nodes,supervisor}
case "$state$root" in *[!A-Za-z0-9_./+@-]*) echo "make up: the folder's path may hold only letters, digits and _ . / + @ - ($state)" >&2; exit 2 ;; esac
if [ -f "$state/mode" ] && [ "$(cat "$state/mode")" != "$secure" ]; then
  echo "make up: $state was set up with MESH_UP_SECURE=$(cat "$state/mode"); run 'make down && rm -rf $state' to switch" >&2
  exit 1
fi
echo "$secure" > "$state/mode"

warn_open() {
  cat >&2 <<'WARN'

  !!! WARNING: the bus is OPEN (MESH_UP_SECURE=0). Anything that reaches the NATS port, a device's
  !!! underlay included, can list tenants, create devices and publish forged peer updates.
  !!! Use this for debugging only; the default (MESH_UP_SECURE=1) is TLS and a credential per process.
WARN
}
[ "$secure" = 0 ] && warn_open

steps=11; n=0
step() { n=$((n + 1)); printf '\n[%d/%d] %s\n' "$n" "$steps" "$*"; }
fail() { echo "make up: FAILED: $1" >&2; [ -n "${2:-}" ] && echo "  log: $2" >&2 && tail -n 20 "$2" >&2 2>/dev/null; exit 1; }

step "installing what is missing"
scripts/deps.sh || fail "installing dependencies (scripts/deps.sh)"

step "building ($build)"
if [ "$build" != skip ]; then
  mode_flag=(-c "$build")
  swift build "${mode_flag[@]}" --product meshctl > "$state/logs/build.log" 2>&1 || fail "swift build" "$state/logs/build.log"
  for p in AllocatorSvc ProvisionSvc FanoutSvc NodeApplier Gateway; do
    swift build "${mode_flag[@]}" --product "$p" >> "$state/logs/build.log" 2>&1 || fail "swift build --product $p" "$state/logs/build.log"
  done
fi
for p in AllocatorSvc ProvisionSvc FanoutSvc NodeApplier Gateway meshctl; do
  [ -x "$bin/$p" ] || fail "$bin/$p is missing (build it, or unset MESH_UP_BUILD)"
done

step "network: bridge $bridge ($subnet.1/24), namespaces $up_name-node1 and $up_name-node2"
if ! ip link show "$bridge" >/dev/null 2>&1; then
  # A fixed MAC: a bridge otherwise takes its ports' lowest MAC, which changes as ports come and go.
  mac=$(printf '02:6d:%s' "$(printf '%s' "$up_name" | sha1sum | cut -c1-8 | sed 's/../&:/g; s/:$//')")
  ip link add "$bridge" type bridge && ip link set "$bridge" address "$mac" \
    && ip addr add "$subnet.1/24" dev "$bridge" && ip link set "$bridge" up \
    || fail "creating the bridge $bridge"
fi
for i in 1 2; do
  ns="$up_name-node$i"
  if ! ip netns list | grep -qw "$ns"; then
    ip netns add "$ns"
    ip link add "$up_name-v$i" type veth peer name "$up_name-p$i"
    ip link set "$up_name-p$i" netns "$ns"
    ip link set "$up_name-v$i" master "$bridge" up
    ip netns exec "$ns" ip addr add "$subnet.1$i/24" dev "$up_name-p$i"
    ip netns exec "$ns" ip link set "$up_name-p$i" up
    ip netns exec "$ns" ip link set lo up
  fi
  mkdir -p "$state/nodes/node$i/run"
done

step "keys, certificates and databases (in $state)"
if [ "$secure" = 1 ]; then
  scripts/gen-certs.sh "$state/certs" --san "$subnet.1" > "$state/logs/certs.log" 2>&1 || fail "making certificates" "$state/logs/certs.log"
  if [ ! -f "$state/bus/nats.conf" ]; then
    "$bin/meshctl" bus init --out "$state/bus" --tls-cert "$state/certs/nats.pem" --tls-key "$state/certs/nats.key" \
      > "$state/logs/bus-init.log" 2>&1 || fail "meshctl bus init" "$state/logs/bus-init.log"
  fi
fi
if [ ! -s "$state/secrets/jwt-secret" ]; then
  (umask 077; head -c 48 /dev/urandom | base64 -w0 > "$state/secrets/jwt-secret")
fi
pgdir=$(pg_data_dir)
if [ ! -f "$pgdir/data/PG_VERSION" ]; then
  install -d -o postgres -g postgres -m 700 "$pgdir" "$pgdir/sock"
  runuser -u postgres -- "$(pg_bin)/initdb" -D "$pgdir/data" -A trust -U postgres -E UTF8 > "$state/logs/initdb.log" 2>&1 \
    || fail "initdb" "$state/logs/initdb.log"
fi
install -d -o postgres -g postgres -m 700 "$pgdir/sock"
mkdir -p "$state/nats"

# Everything each program needs, written as supervisord's configuration. Nothing secret goes in it:
# secrets are files (credentials, signing keys, the JWT secret, the enrollment token).
nats_url="nats://$subnet.1:$nats_port"
db_url="postgresql://postgres@127.0.0.1:$pg_port/mesh"
common_env=(MESH_NATS_URL="$nats_url" MESH_DATABASE_URL="$db_url" MESH_JWT_SECRET_FILE="$state/secrets/jwt-secret")
creds() { [ "$secure" = 1 ] && echo "MESH_NATS_CREDS_FILE=$state/bus/creds/$1.creds" || echo "MESH_NATS_CREDS_FILE="; }
if [ "$secure" = 1 ]; then
  common_env+=(MESH_NATS_TLS_CA="$state/certs/ca.pem")
  provision_bus=(MESH_BUS_ACCOUNT_JWT_FILE="$state/bus/accounts/mesh.jwt" MESH_BUS_ACCOUNT_SIGNING_KEY_FILE="$state/bus/keys/mesh-signing.nk"
                 MESH_BUS_OPERATOR_SIGNING_KEY_FILE="$state/bus/keys/operator-signing.nk" MESH_BUS_SYSTEM_CREDS_FILE="$state/bus/creds/system.creds")
  gateway_tls=(MESH_GATEWAY_TLS_CERT="$state/certs/gateway.pem" MESH_GATEWAY_TLS_KEY="$state/certs/gateway.key")
  nats_config=(-c "$state/bus/nats.conf")
  scheme=https
else
  provision_bus=(); gateway_tls=(); nats_config=(); scheme=http
fi
metrics() { [ "$metrics_port" = off ] && echo "MESH_METRICS_ADDRESS=" || echo "MESH_METRICS_ADDRESS=127.0.0.1:$((metrics_port + $1))"; }
# The environment file for people and for `make status`: meshctl as the operator.
{
  echo "# Quazzar Mesh (make up): source this to use meshctl against it."
  echo "export MESH_NATS_URL=$nats_url MESH_DATABASE_URL=$db_url MESH_JWT_SECRET_FILE=$state/secrets/jwt-secret"
  if [ "$secure" = 1 ]; then
    echo "export MESH_NATS_TLS_CA=$state/certs/ca.pem MESH_NATS_CREDS_FILE=$state/bus/creds/admin.creds"
  else
    echo "unset MESH_NATS_TLS_CA MESH_NATS_CREDS_FILE"
  fi
  echo "export MESHCTL=$bin/meshctl MESH_UP_GATEWAY_URL=$scheme://$gateway MESH_UP_SECURE=$secure"
} > "$state/env"

# Sign-in (optional): OpenID Connect providers for the gateway, and the local demo provider.
signin=(); signin_note=""; demo_idp=0
providers_file=${MESH_UP_OIDC_PROVIDERS_FILE:-}
if [ "${MESH_UP_DEMO_IDP:-0}" = 1 ]; then
  demo_idp=1
  demo_password_file="$state/secrets/demo-idp-password"
  demo_secret_file="$state/secrets/demo-idp-client-secret"
  [ -s "$demo_password_file" ] || (umask 077; head -c 12 /dev/urandom | base64 -w0 | tr -d '/+=' > "$demo_password_file")
  [ -s "$demo_secret_file" ] || (umask 077; head -c 24 /dev/urandom | base64 -w0 | tr -d '/+=' > "$demo_secret_file")
  idp_port=${MESH_UP_DEMO_IDP_PORT:-8099}
  claims=$(printf '{"name":"Demo person","email":"demo@example.com","email_verified":true,"mesh_tenant":"%s","groups":["mesh-admins"]}' "$tenant_id")
  # The secrets stay in their files: the program reads them when it starts.
  demo_idp_cmd="exec $(printf %q "${MESH_VENV:-$root/.build-venv}/bin/python") Tests/oidc/test_provider.py --port $idp_port"
  demo_idp_cmd+=" --client \"quazzar-mesh:\$(cat $(printf %q "$demo_secret_file")):$scheme://$gateway/api/auth/callback\""
  demo_idp_cmd+=" --user \"demo:\$(cat $(printf %q "$demo_password_file")):\"$(printf %q "$claims")"
  providers_file="$state/demo-idp-providers.json"
  printf '[{"id":"demo","name":"Demo IdP","issuer":"http://127.0.0.1:%s","client_id":"quazzar-mesh","client_secret_file":"%s","tenant_claim":"mesh_tenant","admin_claim":"groups=mesh-admins"}]\n' \
    "$idp_port" "$demo_secret_file" > "$providers_file"
  signin_note="Sign in:     with \"Demo IdP\" on the page: user demo, password $(cat "$demo_password_file") (local test provider, http://127.0.0.1:$idp_port)"
fi
if [ -n "$providers_file" ]; then
  [ -f "$providers_file" ] || fail "MESH_UP_OIDC_PROVIDERS_FILE=$providers_file does not exist"
  [ -s "$state/secrets/session-secret" ] || (umask 077; head -c 48 /dev/urandom | base64 -w0 > "$state/secrets/session-secret")
  signin=(MESH_OIDC_PROVIDERS_FILE="$providers_file" MESH_GATEWAY_PUBLIC_URL="$scheme://$gateway" MESH_SESSION_SECRET_FILE="$state/secrets/session-secret")
  [ -n "$signin_note" ] || signin_note="Sign in:     through the providers of $providers_file (callback: $scheme://$gateway/api/auth/callback)"
fi

# Writes supervisord's configuration; the gateway's section once node1 has registered (the gateway
# serves that node's state).
write_supervisor_conf() {
  local conf=$sv_conf i ndir in_node node1
  {
    sv_header
    # Priorities order start-up and (reversed) shutdown: infrastructure, services, nodes, gateway.
    sv_env=()
    sv_program nats 10 "" nats-server "${nats_config[@]+"${nats_config[@]}"}" -a "$subnet.1" -p "$nats_port" -n "mesh-up-$up_name"
    sv_program postgres 10 postgres "$(pg_bin)/postgres" -D "$pgdir/data" -p "$pg_port" -k "$pgdir/sock" \
      -c listen_addresses=127.0.0.1 -c max_connections=200
    sv_env=("${common_env[@]}" MESH_INSTANCE=allocator "$(metrics 0)" "$(creds allocator)")
    sv_program AllocatorSvc 20 "" "$bin/AllocatorSvc"
    sv_env=("${common_env[@]}" MESH_INSTANCE=provision "$(metrics 1)" "$(creds provision)" "${provision_bus[@]+"${provision_bus[@]}"}")
    sv_program ProvisionSvc 20 "" "$bin/ProvisionSvc"
    sv_env=("${common_env[@]}" MESH_INSTANCE=fanout "$(metrics 2)" "$(creds fanout)")
    sv_program FanoutSvc 20 "" "$bin/FanoutSvc"
    for i in 1 2; do
      ndir="$state/nodes/node$i"
      # Each node has its own /var/run/wireguard (a bind mount in a private mount namespace), so
      # both can call their interface wg-quazzar0 as in production; the sockets live in
      # <state>/nodes/nodeN/run. wireguard-go runs in the foreground under the supervisor, and
      # NodeApplier waits for its socket instead of starting one (MESH_WG_USERSPACE_DAEMON=external).
      in_node=(ip netns exec "$up_name-node$i" unshare --mount --propagation private sh -c)
      sv_env=(LOG_LEVEL=error)
      sv_program "wireguard-go-node$i" 30 "" "${in_node[@]}" "mount --bind '$ndir/run' /var/run/wireguard && exec wireguard-go -f wg-quazzar0"
      sv_env=("${common_env[@]}" MESH_INSTANCE="node$i" MESH_NODE_NAME="node$i" MESH_NODE_STATE_DIR="$ndir" MESH_WG_INTERFACE=wg-quazzar0
              MESH_NODE_ENDPOINT="$subnet.1$i:51820" MESH_WG_BACKEND=userspace MESH_WG_USERSPACE_DAEMON=external
              MESH_DNS_HOSTS_FILE="$ndir/hosts" MESH_NODE_ENROLLMENT_TOKEN_FILE="$ndir/enroll-token" MESH_METRICS_ADDRESS= "$(creds enroll)")
      sv_program "NodeApplier-node$i" 31 "" "${in_node[@]}" "mount --bind '$ndir/run' /var/run/wireguard && exec '$bin/NodeApplier'"
    done
    if [ -f "$state/nodes/node1/node.json" ]; then
      node1=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["nodeID"])' "$state/nodes/node1/node.json")
      sv_env=("${common_env[@]}" MESH_INSTANCE=gateway MESH_GATEWAY_ADDRESS="$gateway" MESH_GATEWAY_NODE_ID="$node1" MESH_METRICS_ADDRESS=
              "$(creds gateway)" "${gateway_tls[@]+"${gateway_tls[@]}"}" "${signin[@]+"${signin[@]}"}")
      sv_program Gateway 40 "" "$bin/Gateway"
    fi
    if [ "$demo_idp" = 1 ]; then
      sv_env=()
      sv_program demo-idp 35 "" bash -c "$demo_idp_cmd"
    fi
  } > "$conf.new"
  mv "$conf.new" "$conf"
}
write_supervisor_conf

step "supervisor (supervisord, $sv_conf)"
if sv_running; then
  # Pick up a changed configuration; unchanged programs keep running.
  sv_ctl reread > /dev/null && sv_ctl update > /dev/null || fail "supervisorctl update" "$state/logs/supervisord.log"
  echo "  supervisord: already running (pid $(sv_ctl pid))"
else
  kill_orphans
  supervisord -c "$sv_conf" || fail "starting supervisord" "$state/logs/supervisord.log"
  for _ in $(seq 1 100); do sv_running && break; sleep 0.1; done
  sv_running || fail "supervisord does not answer" "$state/logs/supervisord.log"
  echo "  supervisord: started (pid $(sv_ctl pid))"
fi

step "NATS on $subnet.1:$nats_port ($([ "$secure" = 1 ] && echo "TLS, a credential per process" || echo "OPEN")) and PostgreSQL on 127.0.0.1:$pg_port"
sv_start nats postgres || fail "starting NATS and PostgreSQL" "$state/logs/supervisord.log"
wait_tcp "$subnet.1" "$nats_port" || fail "NATS does not listen on $subnet.1:$nats_port" "$state/logs/nats.log"
wait_tcp 127.0.0.1 "$pg_port" || fail "PostgreSQL does not listen on $pg_port" "$state/logs/postgres.log"
admin_db="postgresql://postgres@127.0.0.1:$pg_port/postgres"
for _ in $(seq 1 100); do psql "$admin_db" -tAc "SELECT 1" >/dev/null 2>&1 && break; sleep 0.2; done
if ! psql "$admin_db" -tAc "SELECT 1 FROM pg_database WHERE datname = 'mesh'" | grep -q 1; then
  psql "$admin_db" -qc "CREATE DATABASE mesh" || fail "creating the database"
fi

step "control plane: AllocatorSvc, ProvisionSvc, FanoutSvc"
sv_start AllocatorSvc ProvisionSvc FanoutSvc || fail "starting the services" "$state/logs/supervisord.log"
ctl() { (source "$state/env"; "$bin/meshctl" "$@"); }
for _ in $(seq 1 100); do ctl tenant list >/dev/null 2>&1 && break; sleep 0.3; done
ctl tenant list >/dev/null 2>&1 || fail "the control plane does not answer" "$state/logs/ProvisionSvc.log"

step "demo tenant ($plan plan) and admin user"
out=$(ctl tenant create --name "Demo" --plan "$plan" --id "$tenant_id" 2>&1) || echo "$out" | grep -qi "already.\?exists" || fail "meshctl tenant create: $out"
out=$(ctl user create --tenant "$tenant_id" --name "Demo admin" --role admin --id "$admin_id" 2>&1) || echo "$out" | grep -qi "already.\?exists" || fail "meshctl user create: $out"
echo "  tenant $tenant_id, admin $admin_id"

step "demo nodes: NodeApplier + wireguard-go in $up_name-node1 and $up_name-node2"
for i in 1 2; do
  ndir="$state/nodes/node$i"
  if [ ! -f "$ndir/node.json" ] && [ ! -s "$ndir/enroll-token" ]; then
    # Single use: a node that registers keeps node.json and never needs the token again.
    token=$(ctl node enroll --tenant "$tenant_id" --admin "$admin_id" --uses 1) || fail "meshctl node enroll"
    (umask 077; printf '%s\n' "$token" > "$ndir/enroll-token")
  fi
  [ -f "$ndir/enroll-token" ] || : > "$ndir/enroll-token"
done
sv_start wireguard-go-node1 wireguard-go-node2 NodeApplier-node1 NodeApplier-node2 || fail "starting the nodes" "$state/logs/supervisord.log"
for i in 1 2; do
  for _ in $(seq 1 150); do [ -f "$state/nodes/node$i/node.json" ] && break; sleep 0.2; done
  [ -f "$state/nodes/node$i/node.json" ] || fail "node$i did not register" "$state/logs/NodeApplier-node$i.log"
  : > "$state/nodes/node$i/enroll-token"   # single-use and spent; an empty file, as the program's settings name it
done
write_supervisor_conf
sv_ctl reread > /dev/null && sv_ctl update > /dev/null || fail "supervisorctl update" "$state/logs/supervisord.log"

step "gateway on $scheme://$gateway"
if [ "$demo_idp" = 1 ]; then
  sv_start demo-idp || fail "starting the demo identity provider" "$state/logs/demo-idp.log"
  for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$idp_port/.well-known/openid-configuration" >/dev/null 2>&1 && break; sleep 0.2; done
  curl -fsS "http://127.0.0.1:$idp_port/.well-known/openid-configuration" >/dev/null 2>&1 || fail "the demo identity provider does not answer" "$state/logs/demo-idp.log"
fi
sv_start Gateway || fail "starting the gateway" "$state/logs/supervisord.log"
curl_ca=(); [ "$secure" = 1 ] && curl_ca=(--cacert "$state/certs/ca.pem")
for _ in $(seq 1 100); do curl -fsS "${curl_ca[@]+"${curl_ca[@]}"}" "$scheme://$gateway/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fsS "${curl_ca[@]+"${curl_ca[@]}"}" "$scheme://$gateway/readyz" >/dev/null 2>&1 || fail "the gateway is not ready" "$state/logs/Gateway.log"

step "ready"
sv_ctl status | sed 's/^/  /'
token=$(ctl token user --tenant "$tenant_id" --user "$admin_id" --role admin --ttl 86400)
ca_note=""; [ "$secure" = 1 ] && ca_note=$(printf '\n               TLS: trust %s (curl --cacert)' "$state/certs/ca.pem")
cat <<MSG

Quazzar Mesh is running$([ "$secure" = 1 ] && echo " (bus: TLS and a credential per process)" || echo " (bus: OPEN, debugging only)").

  Web page:    $scheme://$gateway/vpn/mesh/#token=$token
               (the token is in the URL fragment, which never reaches the server's logs; valid 24 h)$( [ -n "$signin_note" ] && printf '\n  %s' "$signin_note")
  API:         $scheme://$gateway/api/mesh/...   (docs/api.md, $scheme://$gateway/openapi.json)$ca_note
  Nodes:       node1 $subnet.11:51820 and node2 $subnet.12:51820 (mesh DNS on their mesh addresses)

Add a device from the page (Add device → type → label → Generate, then scan the QR with the
WireGuard app or download the .conf), or with curl:

  export TOKEN='$token'
  curl -s ${curl_ca[*]:-} -X POST $scheme://$gateway/api/mesh/devices -H "Authorization: Bearer \$TOKEN" \\
       -H 'Content-Type: application/json' -d '{"label":"My laptop","type":"laptop"}' | python3 -m json.tool
  curl -s ${curl_ca[*]:-} $scheme://$gateway/api/mesh/devices -H "Authorization: Bearer \$TOKEN"

Admin CLI:  source $state/env && \$MESHCTL --help   (meshctl as the operator)
Logs:       $state/logs/        Status: make status        Stop: make down
MSG
[ "$secure" = 0 ] && warn_open
exit 0
