# Quazzar Mesh: every executable in one image (run the one you need as the command).
#
#   docker build -t quazzar-mesh .                        # build from source (the default target)
#   docker build --target prebuilt -t quazzar-mesh .      # package binaries built on the host
#
# The default target builds in release mode in the Swift toolchain image and copies the result into
# a slim Debian with only the runtime libraries (the Swift runtime is linked statically).
# `prebuilt` packages what scripts/compose-images.sh staged in .build-images/prebuilt (executables,
# resource bundles and the Swift runtime libraries they load, from a `swift build` on a Debian 12
# host) into the same runtime image; docs/deployment.md says when to use which.
#
# Where no registry is reachable, scripts/compose-images.sh makes the two base images named below
# from Debian's packages and the local toolchain; elsewhere they are the official ones. Stages that
# install packages need network access from the build: build with `--network host` on an engine
# whose containers have no NAT (scripts/docker-engine.sh).
ARG SWIFT_IMAGE=swift:6.3-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# The runtime: C libraries, wireguard-go and tools, an unprivileged user.
FROM ${RUNTIME_IMAGE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends libnats3.4 libprotobuf-c1 libmnl0 libqrencode4 libpq5 \
      wireguard-go wireguard-tools iproute2 iputils-ping curl nftables conntrack ca-certificates tzdata \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/quazzar-mesh --create-home mesh
ENV MESH_LOG_FORMAT=json
CMD ["/usr/local/bin/Gateway", "--help"]

# Binaries built outside docker (scripts/compose-images.sh prebuilt).
FROM runtime AS prebuilt
COPY .build-images/prebuilt/bin/ /usr/local/bin/
# Services run unprivileged; the NodeApplier container runs as root with NET_ADMIN (it manages an interface).
USER mesh

FROM ${SWIFT_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libnats-dev libprotobuf-c-dev libmnl-dev libqrencode-dev libpq-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Resolve dependencies first so that a source change does not refetch them.
COPY Package.swift ./
RUN swift package resolve
COPY Sources ./Sources
COPY Tests ./Tests
COPY Benchmarks ./Benchmarks
# One product at a time (`--product` takes one name); later ones reuse what the first built.
RUN for p in AllocatorSvc ProvisionSvc FanoutSvc NodeApplier Gateway meshctl; do \
      swift build -c release --static-swift-stdlib --product $p || exit 1; done
RUN mkdir /out && for p in AllocatorSvc ProvisionSvc FanoutSvc NodeApplier Gateway meshctl; do cp .build/release/$p /out/; done \
 && cp -r .build/release/*.resources /out/

# The default target: built from source.
FROM runtime
COPY --from=build /out/ /usr/local/bin/
USER mesh
