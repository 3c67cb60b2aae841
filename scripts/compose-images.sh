#!/usr/bin/env bash
# Builds the images of the compose cluster on a machine that has a Docker engine but no registry.
#
#   scripts/compose-images.sh bases            # the base images the Dockerfiles name, made here
#   scripts/compose-images.sh prebuilt [DIR]   # quazzar-mesh:latest from binaries built on this host
#                                              # (DIR, default .build/debug), plus the cluster's
#                                              # NATS, PostgreSQL and nginx images
#   scripts/compose-images.sh full             # quazzar-mesh:latest with the Dockerfile's own build
#                                              # stage (a release build inside the container)
#
# Base images (each made only when no image of that name exists, so where a registry is reachable
# and the real ones were pulled, they are used as they are; MESH_IMAGES_FORCE=1 makes them again):
#   debian:bookworm-slim   debootstrap --variant=minbase of Debian 12 from the package mirror this
#                          machine's apt uses (read from `apt-get indextargets` at run time), with
#                          the same apt sources and Acquire:: settings inside, then `docker import`.
#   swift:6.3-bookworm     the same Debian plus what Swift's official bookworm image installs, this
#                          machine's toolchain (/opt/swift/usr, into /usr as in the official image),
#                          and this machine's git url rewrites with the local folders they point at
#                          (here: the Swift package mirror), so that `swift package resolve` in the
#                          Dockerfile resolves exactly as it does on this host.
# Nothing here names a registry or a mirror: both come from this machine's configuration.
#
# Every figure this prints ("... in N s") is what docs/deployment.md quotes.
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian's docker client, which matches its engine (another client may come first in PATH).
if [ -x /usr/bin/docker ]; then docker() { /usr/bin/docker "$@"; }; fi
root=$(pwd)
work="$root/.build-images"
force=${MESH_IMAGES_FORCE:-0}
products=(AllocatorSvc ProvisionSvc FanoutSvc NodeApplier Gateway meshctl)
# What Swift's official bookworm image installs next to the toolchain.
swift_deps=(binutils git gnupg2 libc6-dev libcurl4-openssl-dev libedit2 libgcc-12-dev libpython3-dev
            libsqlite3-0 libstdc++-12-dev libxml2-dev libncurses-dev libz3-dev pkg-config tzdata zlib1g-dev unzip
            ca-certificates)

say() { echo "compose-images: $*"; }
die() { echo "compose-images: $*" >&2; exit 1; }
have_image() { [ "$force" != 1 ] && docker image inspect "$1" >/dev/null 2>&1; }
secs() { echo $(( $(date +%s) - $1 )); }

# "URI suite" lines of the Debian 12 repositories apt is configured with.
apt_repos() {
  apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' 2>/dev/null \
    | awk '$2 ~ /^bookworm/ && $3 == "main"' | sort -u
}

# debootstrap into $1 with extra packages $2 (comma-separated), apt configured like this machine's.
bootstrap() {
  local dir=$1 include=$2 mirror
  mirror=$(apt_repos | awk '$2 == "bookworm" {print $1; exit}')
  [ -n "$mirror" ] || die "no Debian 12 (bookworm) repository in this machine's apt configuration"
  rm -rf "$dir" && mkdir -p "$dir"
  debootstrap --variant=minbase ${include:+--include="$include"} bookworm "$dir" "$mirror" >"$dir.log" 2>&1 \
    || { tail -20 "$dir.log" >&2; die "debootstrap failed (log: $dir.log)"; }
  # The same repositories and download settings as this machine.
  rm -f "$dir/etc/apt/sources.list"
  apt_repos | while read -r uri suite component; do
    printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: %s\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n' \
      "$uri" "$suite" "$component"
  done > "$dir/etc/apt/sources.list.d/debian.sources"
  for f in /etc/apt/apt.conf.d/*; do
    [ -f "$f" ] && grep -q '^[[:space:]]*Acquire::' "$f" && cp "$f" "$dir/etc/apt/apt.conf.d/"
  done
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/var/log/*.log
}

import() {
  local dir=$1 tag=$2; shift 2
  tar --numeric-owner -C "$dir" -c . | docker import "$@" \
    --change "LABEL quazzar-mesh.made-by=scripts/compose-images.sh" - "$tag" >/dev/null
}

debian_base() {
  if have_image debian:bookworm-slim; then say "debian:bookworm-slim: present"; return; fi
  local t0; t0=$(date +%s)
  bootstrap "$work/debian" ""
  import "$work/debian" debian:bookworm-slim --change 'CMD ["bash"]'
  rm -rf "$work/debian"
  say "debian:bookworm-slim made from Debian's packages in $(secs "$t0") s"
}

swift_base() {
  if have_image swift:6.3-bookworm; then say "swift:6.3-bookworm: present"; return; fi
  local t0 version; t0=$(date +%s)
  version=$(/opt/swift/usr/bin/swift --version 2>/dev/null | head -1)
  [[ "$version" == *"Swift version 6.3"* ]] || die "the toolchain in /opt/swift is not Swift 6.3 ($version)"
  bootstrap "$work/swift" "$(IFS=,; echo "${swift_deps[*]}")"
  cp -a /opt/swift/usr/. "$work/swift/usr/"
  # This machine's git url rewrites, and the local folders they point at.
  git config --system --get-regexp '^url\..*\.insteadof$' 2>/dev/null | while read -r key value; do
    local base=${key#url.}; base=${base%.insteadof}
    git config --file "$work/swift/etc/gitconfig" --add "url.$base.insteadOf" "$value"
    if [[ "$base" == /* ]] && [ -d "$base" ] && [ ! -e "$work/swift$base" ]; then
      mkdir -p "$work/swift$(dirname "$base")" && cp -a "$base" "$work/swift$base"
    fi
  done
  import "$work/swift" swift:6.3-bookworm --change 'CMD ["bash"]'
  rm -rf "$work/swift"
  say "swift:6.3-bookworm made from Debian's packages and /opt/swift ($version) in $(secs "$t0") s"
}

# The NATS, PostgreSQL and nginx images of the cluster (built from Debian's packages by their
# Dockerfiles under compose/).
infra_images() {
  local t0; t0=$(date +%s)
  docker-compose -f compose/docker-compose.yml build -q --parallel nats-1 postgres proxy >"$work/infra-build.log" 2>&1 \
    || { cat "$work/infra-build.log" >&2; return 1; }
  say "NATS, PostgreSQL and nginx images built in $(secs "$t0") s"
}

# Copies the executables, their resource bundles and the Swift runtime libraries they load (found
# by ldd, put beside them: the binaries' RUNPATH includes $ORIGIN) into .build-images/prebuilt.
stage_prebuilt() {
  local bin=$1 out="$work/prebuilt" p
  for p in "${products[@]}"; do [ -x "$bin/$p" ] || die "$bin/$p is missing (build it first: swift build)"; done
  rm -rf "$out" && mkdir -p "$out/bin"
  for p in "${products[@]}"; do
    strip --strip-debug -o "$out/bin/$p" "$bin/$p"
  done
  cp -a "$bin"/*.resources "$out/bin/" 2>/dev/null || true
  for p in "${products[@]}"; do ldd "$bin/$p"; done | awk '$3 ~ /^\/opt\/swift\// {print $3}' | sort -u \
    | while read -r lib; do cp -L "$lib" "$out/bin/"; done
}

case "${1:-}" in
  bases)
    debian_base
    swift_base
    ;;
  prebuilt)
    bin=${2:-.build/debug}
    debian_base
    t0=$(date +%s)
    stage_prebuilt "$bin"
    # The four images at once: each mostly waits on package downloads.
    infra_images & infra=$!
    docker build -q --network host --target prebuilt -t quazzar-mesh:latest . >/dev/null 2>"$work/prebuilt-build.log" \
      || { cat "$work/prebuilt-build.log" >&2; die "packaging quazzar-mesh:latest failed"; }
    say "quazzar-mesh:latest packaged from $bin in $(secs "$t0") s"
    wait "$infra" || die "building the NATS, PostgreSQL and nginx images failed"
    ;;
  full)
    debian_base
    swift_base
    t0=$(date +%s)
    docker build --network host -t quazzar-mesh:latest . >"$work/full-build.log" 2>&1 \
      || { tail -30 "$work/full-build.log" >&2; die "the full image build failed (log: $work/full-build.log)"; }
    say "quazzar-mesh:latest built from source inside docker in $(secs "$t0") s"
    infra_images
    ;;
  *) die "usage: $0 bases | prebuilt [DIR] | full" ;;
esac
