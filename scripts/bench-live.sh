#!/usr/bin/env bash
# Live channel benchmark (docs/benchmarks.md, "Live channel"): 1,000 open pages on
# GET /api/mesh/events against the real Gateway, ProvisionSvc, FanoutSvc and AllocatorSvc on a
# private nats-server and PostgreSQL; scripts/bench_live.py drives them and prints JSON.
#
#   scripts/bench-live.sh            build (release) and run
#
# Settings (environment): MESH_BENCH_PAGES (default 1000), MESH_BENCH_OWNERS (default 10),
# MESH_BENCH_IDLE (seconds of each idle measurement, default 60), MESH_BENCH_SAMPLES (handshake
# reports, default 200), MESH_BENCH_BURST (devices, default 20), MESH_BENCH_POLL (seconds of the
# polling comparison, default 20; 0 skips it), MESH_BENCH_SKIP_BUILD=1 (use the binaries in
# MESH_BENCH_BIN, default .build/release).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bin=${MESH_BENCH_BIN:-$root/.build/release}
owners=${MESH_BENCH_OWNERS:-10}

if [ "${MESH_BENCH_SKIP_BUILD:-0}" != 1 ]; then
  echo "bench-live: building release binaries" >&2
  for p in AllocatorSvc ProvisionSvc FanoutSvc Gateway meshctl; do swift build -c release --product "$p" >/dev/null; done
fi
command -v wg >/dev/null || { echo "bench-live: wg is missing (scripts/deps.sh installs wireguard-tools)" >&2; exit 1; }
# 1,000 streams need 1,000 sockets on each side: raise the soft limit as far as the hard one allows.
pages=${MESH_BENCH_PAGES:-1000}
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -ge 65536 ]; then ulimit -n 65536; else ulimit -n "$hard"; fi
if [ "$(ulimit -n)" -lt $((pages * 2 + 1000)) ]; then
  echo "bench-live: $pages pages need $((pages * 2 + 1000)) open files; the limit here is $(ulimit -n)" >&2
  exit 1
fi

work=$(mktemp -d /tmp/mesh-bench-live.XXXXXX)
chmod 755 "$work"   # PostgreSQL runs as the postgres user and must reach its data folder
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  scripts/infra.sh stop "$work/infra" >/dev/null 2>&1 || true
  if [ "${MESH_BENCH_KEEP:-0}" = 1 ]; then echo "bench-live: logs kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

scripts/infra.sh start "$work/infra" >/dev/null
# shellcheck disable=SC1091
source "$work/infra/env"
free_port() { python3 "$(dirname "${BASH_SOURCE[0]}")/free-port.py"; }
uuid() { python3 -c 'import uuid; print(uuid.uuid4())'; }

tenant=$(uuid); admin=$(uuid)
owner_ids=(); for _ in $(seq 1 "$owners"); do owner_ids+=("$(uuid)"); done
MESH_JWT_SECRET=$(openssl rand -hex 32)
export MESH_JWT_SECRET MESH_LOG_LEVEL=warning
gw_port=$(free_port)
exempt=$(IFS=,; echo "${owner_ids[*]}")

MESH_INSTANCE=alloc-bench "$bin/AllocatorSvc" >"$work/alloc.log" 2>&1 & pids+=($!); alloc_pid=$!
MESH_INSTANCE=prov-bench MESH_RATE_LIMIT_EXEMPT="$exempt" "$bin/ProvisionSvc" >"$work/prov.log" 2>&1 & pids+=($!); prov_pid=$!
MESH_INSTANCE=fanout-bench "$bin/FanoutSvc" >"$work/fanout.log" 2>&1 & pids+=($!); fanout_pid=$!
MESH_GATEWAY_ADDRESS=127.0.0.1:$gw_port "$bin/Gateway" >"$work/gateway.log" 2>&1 & pids+=($!); gw_pid=$!

ctl() { "$bin/meshctl" "$@"; }
for _ in $(seq 1 300); do ctl tenant list >/dev/null 2>&1 && break; sleep 0.1; done
ctl tenant create --name bench --plan enterprise --id "$tenant" >/dev/null
ctl user create --tenant "$tenant" --name admin --role admin --id "$admin" >/dev/null
owner_tokens=()
for i in "${!owner_ids[@]}"; do
  ctl user create --tenant "$tenant" --name "owner $i" --role owner --id "${owner_ids[$i]}" >/dev/null
  owner_tokens+=("$(ctl token user --tenant "$tenant" --user "${owner_ids[$i]}" --role owner --ttl 7200)")
done
admin_token=$(ctl token user --tenant "$tenant" --user "$admin" --role admin --ttl 7200)
enroll=$(ctl node enroll --tenant "$tenant" --admin "$admin")

base=http://127.0.0.1:$gw_port
for _ in $(seq 1 300); do curl -sf "$base/readyz" >/dev/null && break; sleep 0.1; done
curl -sf "$base/readyz" >/dev/null || { echo "bench-live: gateway not ready; see $work/gateway.log" >&2; cat "$work/gateway.log" >&2; exit 1; }

nats_pid=$(cat "$work/infra/nats.pid")
pg_pid=$(head -1 "$work/infra/pg/data/postmaster.pid" 2>/dev/null || true)
tokens=$(python3 -c 'import json,sys; print(json.dumps({"admin": sys.argv[1], "owners": sys.argv[2:]}))' "$admin_token" "${owner_tokens[@]}")
procs=$(python3 -c 'import json,sys; a=sys.argv[1:]; print(json.dumps({k: v for k, v in zip(a[::2], a[1::2]) if v}))' \
  Gateway "$gw_pid" ProvisionSvc "$prov_pid" FanoutSvc "$fanout_pid" AllocatorSvc "$alloc_pid" nats-server "$nats_pid" postgres "$pg_pid")

echo "bench-live: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) (a shared machine: other work runs beside this)" >&2
python3 scripts/bench_live.py --gateway "$base" --nats "$MESH_NATS_URL" --tenant "$tenant" --enroll-token "$enroll" \
  --tokens "$tokens" --pids "$procs" --pages "${MESH_BENCH_PAGES:-1000}" --idle "${MESH_BENCH_IDLE:-60}" \
  --samples "${MESH_BENCH_SAMPLES:-200}" --burst "${MESH_BENCH_BURST:-20}" --poll-seconds "${MESH_BENCH_POLL:-20}"
