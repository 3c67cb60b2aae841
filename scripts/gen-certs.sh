#!/usr/bin/env bash
# Makes the certificates for TLS on the bus and HTTPS on the gateway, with openssl:
#
#   scripts/gen-certs.sh DIR [--san NAME]...
#
#   DIR/ca.pem, ca.key             a private CA (kept if it already exists, so re-running adds certificates)
#   DIR/nats.pem, nats.key         nats-server:  DNS localhost, nats  IP 127.0.0.1, ::1  + every --san
#   DIR/gateway.pem, gateway.key   the Gateway:  DNS localhost, gateway  IP 127.0.0.1, ::1  + every --san
#
# --san takes a DNS name or an IP address (or MESH_CERT_SANS, comma-separated). Keys are ECDSA P-256
# and mode 0600; certificates are valid for 825 days, the CA for ten years. Clients trust DIR/ca.pem
# (MESH_NATS_TLS_CA for the services and nodes, curl --cacert for the API). Nothing is printed but
# the file names.
set -euo pipefail

dir=${1:-}
[ -n "$dir" ] || { echo "usage: $0 DIR [--san NAME]..." >&2; exit 2; }
shift
sans=()
while [ $# -gt 0 ]; do
  case "$1" in
    --san) [ $# -ge 2 ] || { echo "gen-certs: --san needs a value" >&2; exit 2; }; sans+=("$2"); shift 2 ;;
    *) echo "gen-certs: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -n "${MESH_CERT_SANS:-}" ]; then IFS=',' read -r -a extra <<<"$MESH_CERT_SANS"; sans+=("${extra[@]}"); fi

command -v openssl >/dev/null || { echo "gen-certs: openssl is missing (apt-get install openssl)" >&2; exit 1; }
mkdir -p "$dir"
umask 077

san_list() {
  local out="DNS:localhost,DNS:$1,IP:127.0.0.1,IP:::1" s
  for s in "${sans[@]+"${sans[@]}"}"; do
    [ -n "$s" ] || continue
    if [[ "$s" =~ ^[0-9.]+$ || "$s" == *:* ]]; then out="$out,IP:$s"; else out="$out,DNS:$s"; fi
  done
  echo "$out"
}

if [ ! -f "$dir/ca.pem" ] || [ ! -f "$dir/ca.key" ]; then
  openssl ecparam -name prime256v1 -genkey -noout -out "$dir/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$dir/ca.key" -sha256 -days 3650 -subj "/O=Quazzar Mesh/CN=Quazzar Mesh CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$dir/ca.pem" 2>/dev/null
  chmod 0644 "$dir/ca.pem"
  echo "$dir/ca.pem"
fi

leaf() {
  local name=$1 ext
  ext=$(mktemp)
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=%s\n' \
    "$(san_list "$name")" > "$ext"
  openssl ecparam -name prime256v1 -genkey -noout -out "$dir/$name.key" 2>/dev/null
  openssl req -new -key "$dir/$name.key" -subj "/O=Quazzar Mesh/CN=$name" -out "$dir/$name.csr" 2>/dev/null
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial -sha256 -days 825 \
    -extfile "$ext" -out "$dir/$name.pem" 2>/dev/null
  rm -f "$dir/$name.csr" "$ext"
  chmod 0644 "$dir/$name.pem"
  chmod 0600 "$dir/$name.key"
  echo "$dir/$name.pem"
}

leaf nats
leaf gateway
