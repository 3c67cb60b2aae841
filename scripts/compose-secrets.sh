#!/usr/bin/env bash
# Makes compose/secrets/ for the compose cluster (docs/deployment.md): TLS certificates for NATS and
# the gateways (scripts/gen-certs.sh), the bus identities and the nats-server security configuration
# (`meshctl bus init`, with paths rewritten to where the containers mount them), a database password
# and the JWT signing secret. Existing files are kept, so running it again changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
out=compose/secrets
meshctl=${MESHCTL:-}
for candidate in .build/release/meshctl .build/debug/meshctl; do
  [ -z "$meshctl" ] && [ -x "$candidate" ] && meshctl=$candidate
done
if [ -z "$meshctl" ]; then
  swift build -c release --product meshctl >/dev/null
  meshctl=.build/release/meshctl
fi
umask 077
mkdir -p "$out"
scripts/gen-certs.sh "$out/certs" --san nats-1 --san nats-2 --san nats-3 --san gateway --san gateway-1 --san gateway-2 >/dev/null
if [ -f "$out/nats/nats.conf" ] && [ ! -f "$out/nats/creds/monitor.creds" ]; then
  echo "compose-secrets: $out/nats predates the monitor identity (creds/monitor.creds) the health checks use;" >&2
  echo "  remove the cluster's volumes and the bus set-up, then run this again:" >&2
  echo "  docker-compose -f compose/docker-compose.yml down -v && rm -rf $out/nats" >&2
  exit 1
fi
if [ ! -f "$out/nats/nats.conf" ]; then
  "$meshctl" bus init --out "$out/nats" --tls-cert "$out/certs/nats.pem" --tls-key "$out/certs/nats.key" >/dev/null
  abs_nats=$(cd "$out/nats" && pwd) abs_certs=$(cd "$out/certs" && pwd)
  # In the containers: the bus folder is /etc/nats/auth, the certificates /etc/nats/certs, and the
  # resolver keeps its account JWTs on the server's data volume (it must be writable).
  sed -i -e "s|$abs_nats/jwt|/data/jwt|g" -e "s|$abs_nats|/etc/nats/auth|g" -e "s|$abs_certs|/etc/nats/certs|g" "$out/nats/nats.conf"
fi
[ -s "$out/db_password" ] || head -c 24 /dev/urandom | base64 -w0 | tr -d '/+=' > "$out/db_password"
[ -s "$out/jwt_secret" ] || head -c 48 /dev/urandom | base64 -w0 > "$out/jwt_secret"
# The containers run as an unprivileged user; let them read what they mount.
chmod -R a+rX "$out"
echo "compose secrets ready in $out (keep them out of version control)"
