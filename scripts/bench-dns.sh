#!/usr/bin/env bash
# Mesh DNS load test on loopback: the release-mode server pinned to core 0, dnsperf pinned to core 1.
#
# Measures (1) the highest rate dnsperf can drive, with the server's CPU use during that run, and
# (2) latency percentiles at a fixed offered rate (default 20,000 queries/s, the goal for one core).
#
#   scripts/bench-dns.sh                      # defaults below
#   DURATION=20 RATE=50000 RECORDS=5000 scripts/bench-dns.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PORT="${PORT:-15353}"
RECORDS="${RECORDS:-1000}"
DURATION="${DURATION:-15}"
RATE="${RATE:-20000}"
SERVER_CPU="${SERVER_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"

if ! command -v dnsperf >/dev/null; then
  echo "bench-dns: installing dnsperf"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends dnsperf >/dev/null
fi

swift build -c release --product DNSBench >/dev/null
bin="$(swift build -c release --show-bin-path)/DNSBench"
work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then kill -TERM "$server_pid"; wait "$server_pid" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

"$bin" queries --records "$RECORDS" --count 100000 >"$work/queries.txt"
taskset -c "$SERVER_CPU" "$bin" serve --address 127.0.0.1 --port "$PORT" --records "$RECORDS" >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  dig @127.0.0.1 -p "$PORT" +short +tries=1 +time=1 dev-1.quazzar.mesh A 2>/dev/null | grep -q . && break
  sleep 0.1
done
dig @127.0.0.1 -p "$PORT" +short +tries=1 +time=1 dev-1.quazzar.mesh A | grep -q 100.64.0.1 || {
  echo "bench-dns: server did not come up"; cat "$work/server.log"; exit 1; }

ticks() { awk '{print $14 + $15}' "/proc/$server_pid/stat"; }
hz="$(getconf CLK_TCK)"

# 1. Throughput: 8 clients, 500 queries outstanding, as fast as dnsperf can go.
before="$(ticks)"
taskset -c "$LOAD_CPU" dnsperf -s 127.0.0.1 -p "$PORT" -d "$work/queries.txt" -l "$DURATION" -c 8 -q 500 \
  >"$work/throughput.txt" 2>&1
after="$(ticks)"
qps="$(awk '/Queries per second/ {printf "%d", $4}' "$work/throughput.txt")"
lost="$(awk '/Queries lost/ {print $3, $4}' "$work/throughput.txt")"
cpu="$(awk -v t="$((after - before))" -v hz="$hz" -v d="$DURATION" 'BEGIN {printf "%.0f", 100 * t / hz / d}')"

# 2. Latency at a fixed rate, from dnsperf's per-query lines ("> NOERROR name type seconds").
taskset -c "$LOAD_CPU" dnsperf -s 127.0.0.1 -p "$PORT" -d "$work/queries.txt" -l 10 -Q "$RATE" -c 8 -q 500 -v \
  >"$work/latency.txt" 2>&1
awk '/^> / {print $NF}' "$work/latency.txt" | sort -g >"$work/latencies"
n="$(wc -l <"$work/latencies")"
pct() { awk -v p="$1" -v n="$n" 'NR == int(n * p / 100 + 0.999999) {printf "%.3f", $1 * 1000; exit}' "$work/latencies"; }
achieved="$(awk '/Queries per second/ {printf "%d", $4}' "$work/latency.txt")"
codes="$(awk -F': *' '/Response codes/ {print $2}' "$work/throughput.txt")"

# Clean shutdown on SIGTERM is part of what is measured: the server must exit by itself.
kill -TERM "$server_pid"
wait "$server_pid"
server_pid=""

cat <<EOF
mesh DNS benchmark ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -r))
  records in zone:        $RECORDS (A + AAAA each); query mix 45% A, 45% AAAA, 10% NXDOMAIN
  server:                 DNSBench serve (release), taskset -c $SERVER_CPU, one event loop
  load:                   dnsperf $(dnsperf -h 2>&1 | awk '/^Version/ {print $2}'), taskset -c $LOAD_CPU, 8 clients, 500 outstanding
  throughput:             $qps queries/s over ${DURATION}s (lost: $lost; $codes)
  server CPU at that rate: ${cpu}% of one core
  latency at $RATE/s:      achieved $achieved/s, $n answers: p50 $(pct 50) ms, p99 $(pct 99) ms, p99.9 $(pct 99.9) ms, max $(tail -1 "$work/latencies" | awk '{printf "%.3f", $1 * 1000}') ms
EOF
