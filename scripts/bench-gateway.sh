#!/usr/bin/env bash
# Gateway benchmark (docs/benchmarks.md, "Gateway"): wrk against a release build of the real
# Gateway, AllocatorSvc and ProvisionSvc on a private nats-server and PostgreSQL, next to a plain
# Hummingbird hello route (Benchmarks/GatewayBench) measured in the same run.
#
#   scripts/bench-gateway.sh            build (release) and run; prints a table
#
# Settings (environment): MESH_BENCH_DURATION (seconds per run, default 10),
# MESH_BENCH_CONNECTIONS (default 16), MESH_BENCH_THREADS (wrk threads, default 2),
# MESH_BENCH_SKIP_BUILD=1 (use the binaries already in MESH_BENCH_BIN, default .build/release;
# a folder of another build's executables compares builds of one tree), MESH_BENCH_METRICS=1 (also
# print where the device list's time goes: the histograms of ProvisionSvc's bus endpoints and the
# Gateway's routes, scraped from their /metrics before and after the GET run), MESH_BENCH_FANOUT=0
# (leave FanoutSvc out), MESH_BENCH_PERF=DIR
# (record `perf record -g` of ProvisionSvc, the Gateway and PostgreSQL during the GET run, and write
# each one's `perf report --no-children` to DIR), MESH_BENCH_HOLD=SECONDS (keep the system up that
# long before measuring, for measurements by hand).
#
# What runs: an Enterprise tenant (no device cap) with two users, both exempt from the rate
# limit (ProvisionSvc's MESH_RATE_LIMIT_EXEMPT). "reader" owns exactly 50 devices and is the one
# GET /api/mesh/devices lists for; "poster" creates devices with POST /api/mesh/devices.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
duration=${MESH_BENCH_DURATION:-10}
conns=${MESH_BENCH_CONNECTIONS:-16}
threads=${MESH_BENCH_THREADS:-2}
bin=${MESH_BENCH_BIN:-$root/.build/release}

command -v wrk >/dev/null || { echo "bench-gateway: wrk is missing (scripts/deps.sh installs it)" >&2; exit 1; }
if [ "${MESH_BENCH_SKIP_BUILD:-0}" != 1 ]; then
  echo "bench-gateway: building release binaries" >&2
  for p in AllocatorSvc ProvisionSvc FanoutSvc Gateway meshctl GatewayBench ProvisionBench; do swift build -c release --product "$p" >/dev/null; done
fi

work=$(mktemp -d /tmp/mesh-bench-gw.XXXXXX)
chmod 755 "$work"   # PostgreSQL runs as the postgres user and must reach its data folder
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  scripts/infra.sh stop "$work/infra" >/dev/null 2>&1 || true
  if [ "${MESH_BENCH_KEEP:-0}" = 1 ]; then echo "bench-gateway: logs kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

scripts/infra.sh start "$work/infra" >/dev/null
# shellcheck disable=SC1091
source "$work/infra/env"
free_port() { python3 "$(dirname "${BASH_SOURCE[0]}")/free-port.py"; }
uuid() { python3 -c 'import uuid; print(uuid.uuid4())'; }

tenant=$(uuid); reader=$(uuid); poster=$(uuid)
MESH_JWT_SECRET=$(openssl rand -hex 32)
export MESH_JWT_SECRET MESH_LOG_LEVEL=warning
gw_port=$(free_port); hello_port=$(free_port)

MESH_INSTANCE=alloc-bench "$bin/AllocatorSvc" >"$work/alloc.log" 2>&1 & pids+=($!)
prov_metrics=""
[ "${MESH_BENCH_METRICS:-0}" = 1 ] && prov_metrics=127.0.0.1:$(free_port)
MESH_INSTANCE=prov-bench MESH_RATE_LIMIT_EXEMPT="$reader,$poster" MESH_METRICS_ADDRESS=$prov_metrics "$bin/ProvisionSvc" >"$work/prov.log" 2>&1 & pids+=($!); prov_pid=$!
MESH_GATEWAY_ADDRESS=127.0.0.1:$gw_port "$bin/Gateway" >"$work/gateway.log" 2>&1 & pids+=($!); gw_pid=$!
# FanoutSvc takes each change from ProvisionSvc's outbox, as in the running system (without it the
# outbox relay retries the whole undelivered backlog twice a second: MESH_BENCH_FANOUT=0, as this
# benchmark ran before 2026-12-07).
if [ "${MESH_BENCH_FANOUT:-1}" = 1 ]; then
  MESH_INSTANCE=fanout-bench "$bin/FanoutSvc" >"$work/fanout.log" 2>&1 & pids+=($!)
fi
"$bin/GatewayBench" "$hello_port" >"$work/hello.log" 2>&1 & pids+=($!)

ctl() { "$bin/meshctl" "$@"; }
for _ in $(seq 1 200); do ctl tenant list >/dev/null 2>&1 && break; sleep 0.1; done
ctl tenant create --name bench --plan enterprise --id "$tenant" >/dev/null
ctl user create --tenant "$tenant" --name reader --role owner --id "$reader" >/dev/null
ctl user create --tenant "$tenant" --name poster --role owner --id "$poster" >/dev/null
# Devices need a node to list in their configs: register one (no interface; ProvisionBench does the
# node's side of the registration).
admin=$(uuid)
ctl user create --tenant "$tenant" --name admin --role admin --id "$admin" >/dev/null
enroll=$(ctl node enroll --tenant "$tenant" --admin "$admin" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
MESH_BIN_DIR=$bin "$bin/ProvisionBench" register-node --token "$enroll" >/dev/null
reader_token=$(ctl token user --tenant "$tenant" --user "$reader" --role owner --ttl 3600)
poster_token=$(ctl token user --tenant "$tenant" --user "$poster" --role owner --ttl 3600)

base=http://127.0.0.1:$gw_port
for _ in $(seq 1 200); do curl -sf "$base/readyz" >/dev/null && curl -sf "http://127.0.0.1:$hello_port/hello" >/dev/null && break; sleep 0.1; done
curl -sf "$base/readyz" >/dev/null || { echo "bench-gateway: gateway not ready; see $work/gateway.log" >&2; cat "$work/gateway.log" >&2; exit 1; }

for i in $(seq 1 50); do
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $reader_token" -H 'Content-Type: application/json' \
    --data "{\"label\":\"reader device $i\",\"type\":\"laptop\"}" "$base/api/mesh/devices")
  [ "$code" = 201 ] || { echo "bench-gateway: creating device $i gave $code" >&2; exit 1; }
done
listed=$(curl -s -H "Authorization: Bearer $reader_token" "$base/api/mesh/devices" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["devices"]))')
[ "$listed" = 50 ] || { echo "bench-gateway: reader lists $listed devices, expected 50" >&2; exit 1; }

cat >"$work/post.lua" <<'LUA'
-- POST /api/mesh/devices with a unique label per request (no slug collisions).
local counter = 0
local tid = 0
function setup(thread)
  tid = tid + 1
  thread:set("tid", tid)
end
function request()
  counter = counter + 1
  local body = string.format('{"label":"bench %d-%d","type":"laptop"}', tid, counter)
  -- wrk.format replaces wrk.headers (which holds -H Authorization) when given a table: copy them.
  local headers = {["Content-Type"] = "application/json"}
  for k, v in pairs(wrk.headers) do headers[k] = v end
  return wrk.format("POST", "/api/mesh/devices", headers, body)
end
LUA

# Runs wrk and prints "rps p50_ms p99_ms non2xx".
measure() {
  local out
  out=$(wrk -t"$threads" -c"$conns" -d"${duration}s" --latency "$@")
  echo "$out" >>"$work/wrk.txt"
  echo "$out" | python3 -c '
import re, sys
text = sys.stdin.read()
def ms(v):
    m = re.match(r"([\d.]+)(us|ms|s)", v)
    n, unit = float(m.group(1)), m.group(2)
    return n / 1000 if unit == "us" else n * 1000 if unit == "s" else n
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p50 = ms(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))
p99 = ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))
bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
print(f"{rps:.0f} {p50:.2f} {p99:.2f} {bad.group(1) if bad else 0}")'
}

# MESH_BENCH_HOLD=SECONDS: keep the system up that long before measuring, for measurements by hand
# (the base URL and the reader's token are printed).
if [ -n "${MESH_BENCH_HOLD:-}" ]; then
  echo "bench-gateway: holding for $MESH_BENCH_HOLD s: $base, reader token in $work/reader.token" >&2
  echo "$reader_token" >"$work/reader.token"
  sleep "$MESH_BENCH_HOLD"
fi

# Short warm-ups, then the measured runs, one after another.
wrk -t1 -c4 -d2s "http://127.0.0.1:$hello_port/hello" >/dev/null
wrk -t1 -c4 -d2s -H "Authorization: Bearer $reader_token" "$base/api/mesh/devices" >/dev/null
read -r h_rps h_p50 h_p99 h_bad < <(measure "http://127.0.0.1:$hello_port/hello")
scrape() {  # both processes' metrics into $work/metrics-$1.txt
  if [ -n "$prov_metrics" ]; then
    { curl -sf "http://$prov_metrics/metrics" | sed 's/^/provision /'; curl -sf "$base/metrics" | sed 's/^/gateway /'; } >"$work/metrics-$1.txt"
  fi
}
scrape before
perf_pids=()
if [ -n "${MESH_BENCH_PERF:-}" ]; then
  mkdir -p "$MESH_BENCH_PERF"
  # This run's PostgreSQL: its postmaster and the backends it forked.
  postmaster=$(head -1 "$work/infra/pg/data/postmaster.pid")
  pg_pids=$(echo "$postmaster" $(pgrep -P "$postmaster") | tr ' ' ,)
  for spec in "provision:$prov_pid" "gateway:$gw_pid" "postgres:$pg_pids"; do
    perf record -q -F 499 -g -p "${spec#*:}" -o "$MESH_BENCH_PERF/${spec%%:*}.data" -- sleep "$duration" >/dev/null 2>&1 & perf_pids+=($!)
  done
fi
read -r g_rps g_p50 g_p99 g_bad < <(measure -H "Authorization: Bearer $reader_token" "$base/api/mesh/devices")
for p in "${perf_pids[@]}"; do wait "$p" || true; done
if [ -n "${MESH_BENCH_PERF:-}" ]; then
  for name in provision gateway postgres; do
    perf report -i "$MESH_BENCH_PERF/$name.data" --no-children --sort symbol --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' >"$MESH_BENCH_PERF/$name.txt" || true
  done
  echo "bench-gateway: perf reports of the GET run in $MESH_BENCH_PERF" >&2
fi
scrape after
read -r p_rps p_p50 p_p99 p_bad < <(measure -H "Authorization: Bearer $poster_token" -s "$work/post.lua" "$base")

ratio=$(python3 -c "print(f'{100*$g_rps/$h_rps:.1f}')")
printf '\nGateway benchmark: wrk -t%s -c%s -d%ss, release build, %s cores\n' "$threads" "$conns" "$duration" "$(nproc)"
# Every PostgreSQL backend is a session of its own, so with autogroups on it is also a scheduling
# group of its own, beside one group for every other process here; the list's tail depends on it
# (docs/benchmarks.md, "The listing view, and the tail").
printf 'kernel.sched_autogroup_enabled = %s\n' "$(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null || echo unknown)"
printf '%-44s %10s %9s %9s %8s\n' "route" "req/s" "p50 ms" "p99 ms" "non-2xx"
printf '%-44s %10s %9s %9s %8s\n' "GET /hello (plain Hummingbird)" "$h_rps" "$h_p50" "$h_p99" "$h_bad"
printf '%-44s %10s %9s %9s %8s\n' "GET /api/mesh/devices (50 devices)" "$g_rps" "$g_p50" "$g_p99" "$g_bad"
printf '%-44s %10s %9s %9s %8s\n' "POST /api/mesh/devices (rate limit exempt)" "$p_rps" "$p_p50" "$p_p99" "$p_bad"
printf '\nGET /api/mesh/devices = %s%% of the hello route (goal >= 25%%)\n' "$ratio"
printf 'POST /api/mesh/devices p99 = %s ms at %s connections (goal <= 30 ms)\n' "$p_p99" "$conns"
if [ -n "$prov_metrics" ]; then
  printf '\nWhere the GET run spent its time (histogram buckets, share of the run'"'"'s requests at or under each bound):\n'
  python3 - "$work/metrics-before.txt" "$work/metrics-after.txt" <<'PY'
import re, sys
def load(path):
    out = {}
    for line in open(path):
        m = re.match(r'(\S+) (\S+)_bucket\{(.*)\} (\S+)$', line.strip())
        if not m: continue
        proc, name, labels, value = m.groups()
        le = re.search(r'le="([^"]+)"', labels).group(1)
        series = (proc, name, re.sub(r',?le="[^"]+"', '', labels))
        out.setdefault(series, {})[le] = float(value)
    return out
before, after = load(sys.argv[1]), load(sys.argv[2])
for series, buckets in sorted(after.items()):
    old = before.get(series, {})
    delta = {le: n - old.get(le, 0) for le, n in buckets.items()}
    total = delta.get('+Inf', 0)
    if total < 100: continue
    bounds = sorted((float(le), le) for le in delta if le != '+Inf')
    cells = '  '.join(f"<={float(le)*1000:g}ms {100*delta[le]/total:.1f}%" for _, le in bounds if delta[le] < total) or 'all under the first bound'
    print(f"  {series[0]} {series[1]} {{{series[2]}}}: {int(total)} requests; {cells}")
PY
fi
