#!/usr/bin/env bash
# Reproduces, with plain nats.c and nothing of ours on the connection path, why nats-server 2.9
# sometimes refuses valid JWT credentials from nats.c 3.4 ("Signature missing"), and shows that
# refusing such a signature in the signature callback (what MeshBus does) removes every refusal.
#
#   scripts/repro-nats-signature.sh [COUNT]      (default 4000 connections per mode)
#
# Builds Benchmarks/c/nats_sig_repro.c with gcc against Debian's libnats-dev, writes a secured bus
# configuration with `meshctl bus init` (decentralized JWT, as `make up` runs it; no TLS, which
# plays no part here), starts its own nats-server with debug logging on a free loopback port, and
# runs the program in its three modes (see the C file). Then it counts the server's
# "Signature missing" lines. Needs a built meshctl (.build/debug or .build/release, or MESH_BIN_DIR).
# docs/security.md ("Refused connections") explains the result.
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-4000}
work=$(mktemp -d /tmp/mesh-sigrepro-XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

meshctl=
for d in "${MESH_BIN_DIR:-}" .build/debug .build/release; do
  [ -n "$d" ] && [ -x "$d/meshctl" ] && { meshctl="$d/meshctl"; break; }
done
[ -n "$meshctl" ] || { echo "repro: no meshctl built (swift build --product meshctl)" >&2; exit 1; }

gcc -O2 -Wall -Wextra -o "$work/nats_sig_repro" Benchmarks/c/nats_sig_repro.c $(pkg-config --cflags --libs libnats)
"$meshctl" bus init --out "$work/bus" > /dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
nats-server -c "$work/bus/nats.conf" -a 127.0.0.1 -p "$port" -D -l "$work/nats.log" &
pid=$!
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.05; done

echo "libnats $(dpkg-query -W -f='${Version}' libnats3.4 2>/dev/null || echo '?'), $(nats-server --version)"
for mode in pass refuse files; do
  before=$(grep -c "Signature missing" "$work/nats.log" || true)
  line=$("$work/nats_sig_repro" "nats://127.0.0.1:$port" "$work/bus/creds/fanout.creds" "$count" "$mode")
  after=$(grep -c "Signature missing" "$work/nats.log" || true)
  echo "$line server_log_signature_missing=$((after - before))"
done
