#!/usr/bin/env bash
# Starts and stops the real servers the project runs against: nats-server (with JetStream)
# and a PostgreSQL cluster in a data directory of our own.
#
#   scripts/infra.sh start DIR [--durable]   start both; writes DIR/env with MESH_NATS_URL, MESH_DATABASE_URL
#   scripts/infra.sh stop DIR                stop both
#   scripts/infra.sh status DIR
#
# Ports are random free loopback ports unless MESH_NATS_PORT / MESH_PG_PORT are set.
# MESH_NATS_CONFIG=FILE starts nats-server with that configuration too, e.g. the secured bus from
# `meshctl bus init` (docs/security.md); with its TLS block, MESH_NATS_URL stays nats:// and clients
# set MESH_NATS_TLS_CA. MESH_PG_OPTIONS adds PostgreSQL server settings (e.g. "-c shared_preload_libraries=pg_stat_statements").
# PostgreSQL refuses to run as root, so it runs as the `postgres` user via runuser.
set -euo pipefail

cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop|status DIR [--durable]" >&2; exit 2; }
durable=0; [ "${3:-}" = "--durable" ] && durable=1
mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
# PostgreSQL runs as the postgres user, which must be able to enter DIR (mktemp -d makes it 0700).
chmod a+x "$dir"

free_port() { python3 "$(dirname "${BASH_SOURCE[0]}")/free-port.py"; }
pgbin=$(pg_config --bindir 2>/dev/null || true)
# pg_config (from libpq-dev) may point at a client-only directory; find the server binaries.
if [ -z "$pgbin" ] || [ ! -x "$pgbin/postgres" ]; then pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1); fi

start_nats() {
  if [ -f "$dir/nats.pid" ] && kill -0 "$(cat "$dir/nats.pid")" 2>/dev/null; then return; fi
  local port=${MESH_NATS_PORT:-$(free_port)} mon=${MESH_NATS_MONITOR_PORT:-$(free_port)} host=${MESH_NATS_HOST:-127.0.0.1}
  mkdir -p "$dir/nats"
  echo "$host" > "$dir/nats.host"
  local config=()
  if [ -n "${MESH_NATS_CONFIG:-}" ]; then config=(-c "$MESH_NATS_CONFIG"); fi
  nats-server "${config[@]+"${config[@]}"}" -a "$host" -p "$port" -m "$mon" -js -sd "$dir/nats/js" -n "mesh-$port" \
    -l "$dir/nats/nats.log" -P "$dir/nats.pid" >/dev/null 2>&1 &
  local pid=$! started=$SECONDS
  # Up to 60 s, as pg_ctl below: on an emulated CPU (the qemu VM of scripts/vm-test.sh) a loaded host
  # makes nats-server's start take seconds. A server that exits fails at once, with its log.
  until (exec 3<>/dev/tcp/"$host"/"$port") 2>/dev/null; do
    if ! [ -d "/proc/$pid" ] || [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ]; then
      echo "infra: nats-server exited before it listened; its log ($dir/nats/nats.log):" >&2
      tail -20 "$dir/nats/nats.log" >&2 2>/dev/null || true; exit 1
    fi
    if [ $((SECONDS - started)) -ge 60 ]; then
      echo "infra: nats-server did not listen on $host:$port within 60 s; see $dir/nats/nats.log" >&2; exit 1
    fi
    sleep 0.05
  done
  echo "infra: nats-server listening after $((SECONDS - started)) s" >&2
  echo "$port" > "$dir/nats.port"; echo "$mon" > "$dir/nats.monitor"
}

start_pg() {
  local data="$dir/pg/data" sock="$dir/pg/sock"
  if [ -f "$data/postmaster.pid" ] && runuser -u postgres -- "$pgbin/pg_ctl" -D "$data" status >/dev/null 2>&1; then return; fi
  install -d -o postgres -g postgres -m 700 "$dir/pg" "$sock"
  if [ ! -f "$data/PG_VERSION" ]; then
    local began=$SECONDS
    runuser -u postgres -- "$pgbin/initdb" -D "$data" -A trust -U postgres -E UTF8 --no-sync >"$dir/pg/initdb.log" 2>&1 \
      || { echo "infra: initdb failed; its log ($dir/pg/initdb.log):" >&2; tail -20 "$dir/pg/initdb.log" >&2; exit 1; }
    echo "infra: initdb took $((SECONDS - began)) s" >&2
  fi
  local port=${MESH_PG_PORT:-$( [ -f "$dir/pg.port" ] && cat "$dir/pg.port" || free_port)}
  local opts="-p $port -k $sock -c listen_addresses=127.0.0.1 -c max_connections=400 -c shared_buffers=256MB"
  if [ "$durable" = 0 ]; then opts="$opts -c fsync=off -c synchronous_commit=off -c full_page_writes=off"; fi
  # Extra server settings, e.g. MESH_PG_OPTIONS="-c shared_preload_libraries=pg_stat_statements" to profile queries.
  opts="$opts ${MESH_PG_OPTIONS:-}"
  local started=$SECONDS
  runuser -u postgres -- "$pgbin/pg_ctl" -D "$data" -l "$dir/pg/postgres.log" -o "$opts" -w -t 60 start >/dev/null \
    || { echo "infra: PostgreSQL did not start within 60 s; its log ($dir/pg/postgres.log):" >&2; tail -20 "$dir/pg/postgres.log" >&2 2>/dev/null || true; exit 1; }
  echo "infra: PostgreSQL accepting connections after $((SECONDS - started)) s" >&2
  echo "$port" > "$dir/pg.port"
}

write_env() {
  cat > "$dir/env" <<ENV
export MESH_NATS_URL=nats://$(cat "$dir/nats.host" 2>/dev/null || echo 127.0.0.1):$(cat "$dir/nats.port")
export MESH_NATS_MONITOR_URL=http://127.0.0.1:$(cat "$dir/nats.monitor")
export MESH_DATABASE_URL=postgresql://postgres@127.0.0.1:$(cat "$dir/pg.port")/postgres
export MESH_PG_BINDIR=$pgbin
export MESH_INFRA_DIR=$dir
ENV
}

case "$cmd" in
  start) start_nats; start_pg; write_env; cat "$dir/env" ;;
  stop)
    if [ -f "$dir/nats.pid" ]; then kill "$(cat "$dir/nats.pid")" 2>/dev/null || true; rm -f "$dir/nats.pid"; fi
    if [ -f "$dir/pg/data/postmaster.pid" ]; then
      runuser -u postgres -- "$pgbin/pg_ctl" -D "$dir/pg/data" -m fast -w stop >/dev/null 2>&1 || true
    fi ;;
  status)
    if [ -f "$dir/nats.pid" ] && kill -0 "$(cat "$dir/nats.pid")" 2>/dev/null; then echo "nats-server: running on $(cat "$dir/nats.port")"; else echo "nats-server: stopped"; fi
    if runuser -u postgres -- "$pgbin/pg_ctl" -D "$dir/pg/data" status >/dev/null 2>&1; then echo "postgresql: running on $(cat "$dir/pg.port")"; else echo "postgresql: stopped"; fi ;;
  *) echo "usage: $0 start|stop|status DIR" >&2; exit 2 ;;
esac
