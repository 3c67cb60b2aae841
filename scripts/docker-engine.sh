#!/usr/bin/env bash
# Starts (or checks) the Docker engine for the compose cluster without changing how the rest of the
# machine forwards or filters packets.
#
#   scripts/docker-engine.sh start   # configure and start dockerd if it is not running; verify
#   scripts/docker-engine.sh check   # verify only (exit 1 if the engine changed the host's network)
#   scripts/docker-engine.sh stop    # stop a dockerd that this script started
#
# Why: with its defaults, dockerd turns on net.ipv4.ip_forward and, when it does, sets the iptables
# FORWARD policy to DROP; with net.bridge.bridge-nf-call-iptables = 1 (this kernel's default, since
# br_netfilter is built in) every bridged packet goes through that chain, so traffic between network
# namespaces on other Linux bridges (the `make up` demo bridge, the test labs' mqbr* bridges) is
# silently dropped, and whether it is depends on which ran first. The engine is therefore run with
#
#   "iptables": false     dockerd writes no iptables rule and no chain policy (nothing to order);
#   "ip-forward": false   dockerd leaves net.ipv4.ip_forward as it found it.
#
# What that costs: containers reach each other on their networks (bridged, no forwarding), the host
# reaches them, and published ports work through docker-proxy, but containers get no NAT to the
# outside. The cluster needs none; image builds that install packages run with `--network host`
# (compose/docker-compose.yml sets `build.network: host`). bridge-nf-call-iptables is left as found:
# with no rule in FORWARD and the policy unchanged it filters nothing.
#
# The check compares the host's forwarding state (ip_forward, bridge-nf-call-*, the FORWARD policy of
# iptables and ip6tables) with what it was before the engine started, and sends pings between two
# network namespaces across a Linux bridge of its own before and after.
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian's docker client, which matches its engine (another client may come first in PATH).
if [ -x /usr/bin/docker ]; then docker() { /usr/bin/docker "$@"; }; fi

state_dir=/run/quazzar-mesh-docker
log=${MESH_DOCKERD_LOG:-/var/log/quazzar-mesh-dockerd.log}
daemon_json=/etc/docker/daemon.json

say() { echo "docker-engine: $*"; }
die() { echo "docker-engine: $*" >&2; exit 1; }

# The settings this project needs in /etc/docker/daemon.json (merged into an existing file).
write_daemon_json() {
  mkdir -p /etc/docker
  python3 - "$daemon_json" <<'PY'
import json, os, sys
path = sys.argv[1]
conf = {}
if os.path.exists(path) and os.path.getsize(path) > 0:
    with open(path) as f:
        conf = json.load(f)
want = {"iptables": False, "ip-forward": False}
conf.setdefault("storage-driver", "overlay2")
conf.setdefault("log-driver", "json-file")
conf.setdefault("log-opts", {"max-size": "10m", "max-file": "2"})
changed = any(conf.get(k) != v for k, v in want.items())
conf.update(want)
with open(path + ".tmp", "w") as f:
    json.dump(conf, f, indent=2)
    f.write("\n")
os.replace(path + ".tmp", path)
print("changed" if changed else "same")
PY
}

# One line describing everything the engine must not change.
host_state() {
  # Both iptables back ends hook into netfilter, and either may hold rules here (iptables-nft is
  # Debian's default; the legacy tables exist once anything used them), so both are read.
  local v out=""
  for v in iptables-legacy iptables-nft ip6tables-legacy ip6tables-nft; do
    command -v "$v" >/dev/null || continue
    out+=" $v[$($v -w -S FORWARD 2>/dev/null | head -1 || true)]"
  done
  printf 'ip_forward=%s forwarding(v6)=%s bridge-nf-call-iptables=%s bridge-nf-call-ip6tables=%s%s' \
    "$(cat /proc/sys/net/ipv4/ip_forward)" "$(cat /proc/sys/net/ipv6/conf/all/forwarding)" \
    "$(cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null || echo absent)" \
    "$(cat /proc/sys/net/bridge/bridge-nf-call-ip6tables 2>/dev/null || echo absent)" "$out"
}

# Two namespaces on a bridge of our own, pinging each other over IPv4 and IPv6 (the addresses exist
# only inside those two namespaces; the host has none on the bridge). Everything it makes
# is named after this process and removed before it returns.
bridge_ping_test() {
  local id br a b rc=0
  id=$(printf '%05x' $(( ($$ * 7919 + RANDOM) % 1048576 )))
  br="mqbrdk$id" a="mq-dkchk-a$id" b="mq-dkchk-b$id"
  {
    ip link add "$br" type bridge && ip link set "$br" up \
      && ip netns add "$a" && ip netns add "$b" \
      && ip link add "vdka$id" type veth peer name eth0 netns "$a" \
      && ip link add "vdkb$id" type veth peer name eth0 netns "$b" \
      && ip link set "vdka$id" master "$br" up && ip link set "vdkb$id" master "$br" up \
      && ip -n "$a" link set eth0 up && ip -n "$b" link set eth0 up \
      && ip -n "$a" addr add 10.250.77.1/24 dev eth0 && ip -n "$b" addr add 10.250.77.2/24 dev eth0 \
      && ip -n "$a" addr add fd6d:7170::1/64 dev eth0 nodad && ip -n "$b" addr add fd6d:7170::2/64 dev eth0 nodad \
      && ip netns exec "$a" ping -c 2 -i 0.2 -W 2 10.250.77.2 \
      && ip netns exec "$a" ping -6 -c 2 -i 0.2 -W 2 fd6d:7170::2
  } >/dev/null 2>&1 || rc=1
  ip netns del "$a" 2>/dev/null || true
  ip netns del "$b" 2>/dev/null || true
  ip link del "$br" 2>/dev/null || true
  return $rc
}

# Prints the running dockerd's TMPDIR and succeeds when that folder no longer exists.
gone_tmpdir() {
  local pid tmp
  pid=$(pidof dockerd | awk '{print $1}')
  [ -n "$pid" ] || return 1
  tmp=$(tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | sed -n 's/^TMPDIR=//p')
  [ -n "$tmp" ] && [ ! -d "$tmp" ] && echo "$tmp"
}

running() { [ -S /var/run/docker.sock ] && docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

check() {
  local before=${1:-}
  if [ -n "$before" ]; then
    local after; after=$(host_state)
    [ "$before" = "$after" ] || die "the engine changed the host's forwarding state: before: $before; after: $after"
    say "host forwarding state unchanged: $after"
  fi
  bridge_ping_test || die "namespaces on a Linux bridge cannot ping each other with the engine running"
  say "namespaces on a Linux bridge still reach each other (IPv4 and IPv6)"
  python3 - "$daemon_json" <<'PY' || die "$daemon_json must set \"iptables\": false and \"ip-forward\": false"
import json, sys
c = json.load(open(sys.argv[1]))
sys.exit(0 if c.get("iptables") is False and c.get("ip-forward") is False else 1)
PY
}

case "${1:-start}" in
  start)
    command -v dockerd >/dev/null || die "dockerd is not installed (scripts/deps.sh installs docker.io)"
    mkdir -p "$state_dir"
    if running && tmp=$(gone_tmpdir); then
      # A dockerd that inherited the TMPDIR of an earlier run (deleted since) cannot exec into a
      # container: every health check fails with "OCI runtime exec failed: open <TMPDIR>/runc-process…".
      pid=$(cat "$state_dir/dockerd.pid" 2>/dev/null || true)
      [ -n "$pid" ] && [ "$pid" = "$(pidof dockerd | awk '{print $1}')" ] \
        || die "the running dockerd's TMPDIR ($tmp) no longer exists, so it cannot run health checks; restart it"
      say "restarting the dockerd this script started: its TMPDIR ($tmp) no longer exists"
      "$0" stop
    fi
    if running; then
      [ "$(write_daemon_json)" = same ] || die "dockerd is running with settings other than those in $daemon_json; restart it"
      check
      exit 0
    fi
    write_daemon_json >/dev/null
    bridge_ping_test || die "namespaces on a Linux bridge cannot ping each other even before the engine starts"
    before=$(host_state)
    say "starting dockerd (log: $log)"
    # Its own session, so that it outlives the shell that started it; its pid is kept for `stop`.
    # A clean environment: it outlives this run, whose TMPDIR (make test sets one per run) goes.
    env -i PATH="$PATH" HOME="${HOME:-/root}" setsid dockerd --config-file "$daemon_json" >>"$log" 2>&1 < /dev/null &
    echo $! > "$state_dir/dockerd.pid"
    for _ in $(seq 1 120); do running && break; sleep 0.5; done
    running || { tail -20 "$log" >&2; die "dockerd did not come up within 60 s"; }
    say "dockerd $(docker version --format '{{.Server.Version}}') is up"
    check "$before"
    ;;
  check)
    running || die "dockerd is not running"
    check
    ;;
  stop)
    [ -f "$state_dir/dockerd.pid" ] || { say "no dockerd started by this script"; exit 0; }
    pid=$(cat "$state_dir/dockerd.pid")
    if [ -d "/proc/$pid" ] && grep -q dockerd "/proc/$pid/cmdline" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 1 60); do [ -d "/proc/$pid" ] && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] || break; sleep 0.5; done
    fi
    rm -f "$state_dir/dockerd.pid"
    say "stopped"
    ;;
  *) die "usage: $0 start|check|stop" ;;
esac
