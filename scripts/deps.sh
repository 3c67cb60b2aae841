#!/usr/bin/env bash
# Installs the Debian packages the project builds, runs and tests with, if any are missing.
# Safe to run repeatedly; prints nothing when everything is present.
set -euo pipefail

packages=(
  # C libraries wrapped by the package
  libnats-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler libmnl-dev libqrencode-dev libpq-dev
  # real components the tests and `make up` run
  nats-server postgresql wireguard-go wireguard-tools iproute2 iputils-ping procps psmisc
  # make up's process supervisor; the firewall the fault tests cut a node off NATS with
  supervisor nftables
  # access policies: connection tracking (nftables and iperf3 are above)
  conntrack python3
  # QR round trip, DNS, kernel WireGuard under qemu
  zbar-tools librsvg2-bin dnsutils qemu-system-x86 busybox-static kmod cpio
  # the compose cluster (scripts/docker-engine.sh, scripts/compose-images.sh), browser tests, benchmarks
  docker.io docker-compose debootstrap chromium chromium-driver wrk hyperfine dnsperf iperf3
  # misc tools used by scripts; gcc and pkg-config build the C references in Benchmarks/c
  curl jq openssl python3-venv gcc pkg-config
  # nm (the linkage checks of ExecutableTests)
  binutils
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  # Should the package start dockerd, it must already run with the settings that leave the host's
  # forwarding alone (scripts/docker-engine.sh explains them and keeps them in place).
  if [ ! -e /etc/docker/daemon.json ]; then
    mkdir -p /etc/docker && printf '{\n  "iptables": false,\n  "ip-forward": false\n}\n' > /etc/docker/daemon.json
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Python tools for the browser, OpenAPI and DNS-fuzz tests, kept in a venv of our own.
venv="${MESH_VENV:-$(cd "$(dirname "$0")/.." && pwd)/.build-venv}"
req="$(dirname "$0")/requirements.txt"
if [ -f "$req" ]; then
  stamp="$venv/.req-$(sha256sum "$req" | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    echo "deps: preparing Python tools in $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
    touch "$stamp"
  fi
fi
