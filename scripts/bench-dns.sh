#!/usr/bin/env bash
# Mesh DNS load test on loopback: the release-mode server pinned to core 0, dnsperf pinned to core 1.
#
# Measures (1) the highest rate dnsperf can drive, with the server's CPU use during that run, and
# (2) latency percentiles at a fixed offered rate (default 20,000 queries/s, the goal for one core),
# timed by DNSBench's own open-loop generator, next to (3) the same load against a bare UDP echo on the
# same core, which shows the latency the machine itself adds. Other work on the machine skews all of
# them: the load average before the run is printed with the results.
#
#   scripts/bench-dns.sh                      # defaults below
#   DURATION=20 RATE=50000 RECORDS=5000 scripts/bench-dns.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PORT="${PORT:-15353}"
ECHO_PORT="${ECHO_PORT:-15399}"
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
echo_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then kill -TERM "$server_pid"; wait "$server_pid" || true; fi
  if [ -n "$echo_pid" ] && kill -0 "$echo_pid" 2>/dev/null; then kill "$echo_pid"; wait "$echo_pid" || true; fi
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

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
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

# 2. Latency at a fixed offered rate. dnsperf 2.10 reports only mean and standard deviation (its -v
#    per-query output slows it enough to distort the tail), so percentiles come from DNSBench's own
#    open-loop generator, which times every query; dnsperf's mean at the same rate is the cross-check.
taskset -c "$LOAD_CPU" "$bin" load --address 127.0.0.1 --port "$PORT" --records "$RECORDS" --rate "$RATE" \
  --seconds 10 >"$work/latency.txt"
taskset -c "$LOAD_CPU" dnsperf -s 127.0.0.1 -p "$PORT" -d "$work/queries.txt" -l 10 -Q "$RATE" -c 8 -q 500 \
  >"$work/dnsperf-rate.txt" 2>&1
# 3. The same open-loop load against a bare UDP echo on the same core: the machine's own round trip.
#    On a shared or virtual machine its tail is the floor for any server's tail.
taskset -c "$SERVER_CPU" "$bin" echo --address 127.0.0.1 --port "$ECHO_PORT" &
echo_pid=$!
sleep 0.5
taskset -c "$LOAD_CPU" "$bin" load --address 127.0.0.1 --port "$ECHO_PORT" --records "$RECORDS" --rate "$RATE" \
  --seconds 10 >"$work/baseline.txt"
kill "$echo_pid"
wait "$echo_pid" 2>/dev/null || true
echo_pid=""
mean="$(awk '/Average Latency/ {printf "%.3f", $4 * 1000}' "$work/dnsperf-rate.txt")"
stddev="$(awk '/Latency StdDev/ {printf "%.3f", $4 * 1000}' "$work/dnsperf-rate.txt")"
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
  latency at $RATE/s:      $(cat "$work/latency.txt")
  dnsperf at $RATE/s:      mean $mean ms, stddev $stddev ms
  baseline (UDP echo):    $(cat "$work/baseline.txt")
  load average before:    $load_before
EOF
