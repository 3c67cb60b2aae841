# Quazzar Mesh: every executable in one image (run the one you need as the command).
#
#   docker build -t quazzar-mesh .
#
# Stage 1 builds in release mode with the Swift toolchain and the Debian -dev packages; stage 2 is a
# slim Debian with only the runtime libraries (the Swift runtime is linked statically).
ARG SWIFT_IMAGE=swift:6.3-bookworm

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
RUN swift build -c release --static-swift-stdlib \
      --product AllocatorSvc --product ProvisionSvc --product FanoutSvc --product NodeApplier --product Gateway --product meshctl 2>&1 \
 || (for p in AllocatorSvc ProvisionSvc FanoutSvc NodeApplier Gateway meshctl; do swift build -c release --static-swift-stdlib --product $p || exit 1; done)
RUN mkdir /out && for p in AllocatorSvc ProvisionSvc FanoutSvc NodeApplier Gateway meshctl; do cp .build/release/$p /out/; done \
 && cp -r .build/release/*.resources /out/ 2>/dev/null || true

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libnats3.4 libprotobuf-c1 libmnl0 libqrencode4 libpq5 \
      wireguard-go wireguard-tools iproute2 nftables conntrack ca-certificates tzdata \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/quazzar-mesh --create-home mesh
COPY --from=build /out/ /usr/local/bin/
# Services run unprivileged; the NodeApplier container runs as root with NET_ADMIN (it manages an interface).
USER mesh
ENV MESH_LOG_FORMAT=json
CMD ["/usr/local/bin/Gateway", "--help"]
