// swift-tools-version:6.1
// Quazzar Mesh: a WireGuard mesh VPN control plane.
//
// Layout (docs/architecture.md has the full map):
//   C*               one system-library target per C library (pkg-config), each wrapped by exactly one Swift target
//   Mesh*            wrappers (bus/nats.c, store/libpq, QR/libqrencode, WireGuard/libmnl), the protobuf contracts,
//                    MeshDomain (every product rule, on MeshNet and MeshProto only), typed bus clients, DNS, auth
//   ServiceKit       the executables' shared start-up (options, logging, metrics, service host)
//   *Core            the logic of each service, imported by its executable and by the tests
//   AllocatorSvc, ProvisionSvc, FanoutSvc, NodeApplier, Gateway, meshctl   thin executables
import PackageDescription

/// Our own Swift code builds in Swift 6 language mode with strict concurrency, and a warning is an error.
let strict: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .unsafeFlags(["-warnings-as-errors"]),
]

let nio = "swift-nio"
let log = Target.Dependency.product(name: "Logging", package: "swift-log")
let metrics = Target.Dependency.product(name: "Metrics", package: "swift-metrics")
let lifecycle = Target.Dependency.product(name: "ServiceLifecycle", package: "swift-service-lifecycle")
let argParser = Target.Dependency.product(name: "ArgumentParser", package: "swift-argument-parser")
let protobuf = Target.Dependency.product(name: "SwiftProtobuf", package: "swift-protobuf")
let crypto = Target.Dependency.product(name: "Crypto", package: "swift-crypto")
let nioCore = Target.Dependency.product(name: "NIOCore", package: nio)
let nioPosix = Target.Dependency.product(name: "NIOPosix", package: nio)
let nioHTTP1 = Target.Dependency.product(name: "NIOHTTP1", package: nio)
let jwt = Target.Dependency.product(name: "JWTKit", package: "jwt-kit")
// Persistent hash maps with structural sharing (TreeDictionary): a node's view of a large tenant.
let treeCollections = Target.Dependency.product(name: "HashTreeCollections", package: "swift-collections")
let x509 = Target.Dependency.product(name: "X509", package: "swift-certificates")
let asn1 = Target.Dependency.product(name: "SwiftASN1", package: "swift-asn1")
let nioSSL = Target.Dependency.product(name: "NIOSSL", package: "swift-nio-ssl")

func lib(_ name: String, _ deps: [Target.Dependency], resources: [Resource]? = nil) -> Target {
    .target(name: name, dependencies: deps, resources: resources, swiftSettings: strict)
}
func exe(_ name: String, _ deps: [Target.Dependency]) -> Target {
    .executableTarget(name: name, dependencies: deps, swiftSettings: strict)
}
func tests(_ name: String, _ deps: [Target.Dependency]) -> Target {
    .testTarget(name: name, dependencies: deps, swiftSettings: strict)
}
func bench(_ name: String, _ deps: [Target.Dependency]) -> Target {
    .executableTarget(name: name, dependencies: deps, path: "Benchmarks/\(name)", swiftSettings: strict)
}

let package = Package(
    name: "quazzar-mesh",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "AllocatorSvc", targets: ["AllocatorSvc"]),
        .executable(name: "ProvisionSvc", targets: ["ProvisionSvc"]),
        .executable(name: "FanoutSvc", targets: ["FanoutSvc"]),
        .executable(name: "NodeApplier", targets: ["NodeApplier"]),
        .executable(name: "Gateway", targets: ["Gateway"]),
        .executable(name: "meshctl", targets: ["meshctl"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-protobuf.git", exact: "1.39.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.8.0"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
    ],
    targets: [
        // MARK: C libraries (Debian packages), one system-library target each.
        .systemLibrary(name: "CNats", pkgConfig: "libnats", providers: [.apt(["libnats-dev"])]),
        .systemLibrary(name: "CPostgres", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),
        .systemLibrary(name: "CQRencode", pkgConfig: "libqrencode", providers: [.apt(["libqrencode-dev"])]),
        .systemLibrary(name: "CMNL", pkgConfig: "libmnl", providers: [.apt(["libmnl-dev"])]),
        .systemLibrary(name: "CProtobufC", pkgConfig: "libprotobuf-c", providers: [.apt(["libprotobuf-c-dev"])]),
        // protoc-c output for proto/mesh/v1 (committed; proto/generate.sh), used by the interop tests only.
        .target(
            name: "CMeshProtoC",
            dependencies: ["CProtobufC"],
            cSettings: [.headerSearchPath("generated")]
        ),

        // MARK: Wrappers: the only targets that import a C module.
        lib("MeshBus", ["CNats", log, metrics, lifecycle]),
        lib("MeshStore", ["CPostgres", "MeshNet", log, metrics]),
        lib("MeshQR", ["CQRencode"]),
        lib("MeshWireGuard", ["CMNL", "MeshNet", "MeshKeys", "MeshSpawn", log]),
        lib("ProtoInterop", ["CMeshProtoC", "MeshProto", protobuf]),

        // MARK: The domain: every rule of the product, with no infrastructure under it.
        lib("MeshNet", []),
        // Child processes inherit their standard streams only.
        lib("MeshSpawn", []),
        // Generated protobuf code keeps every message with many fields in a class, so each field read
        // or write is a dynamic exclusivity check (swift_beginAccess): 5–8% of ProvisionSvc's and the
        // Gateway's CPU on a device list. The generated code never overlaps its accesses, so release
        // builds leave the checks out for this target only; debug builds, and so the tests, keep them
        // (docs/benchmarks.md).
        .target(name: "MeshProto", dependencies: [protobuf],
                swiftSettings: strict + [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]),
        // Errors, the plan catalogue, names, keys, subjects, the rate limit and the peer catalogue.
        lib("MeshDomain", ["MeshNet", "MeshProto", treeCollections]),

        // X25519 keypairs for WireGuard, from swift-crypto.
        lib("MeshKeys", [crypto]),

        // MARK: Ports and kits shared by the executables.
        // Typed bus clients of every service, and the mapping of bus errors to MeshError.
        lib("MeshClient", ["MeshBus", "MeshProto", "MeshDomain", log, protobuf, treeCollections]),
        // What every executable's start-up shares: options from the environment, logging, metrics,
        // the service host. No database: each service that has tables brings its own schema.
        lib("ServiceKit", ["MeshBus", "MeshClient", "MeshDomain", log, metrics, lifecycle, argParser, nioCore, nioPosix, nioHTTP1,
                           .product(name: "Prometheus", package: "swift-prometheus")]),
        // API tokens (JWT claims, minting, verification) and device keypairs: the Gateway and meshctl
        // share it without Hummingbird.
        // A service's own database schema, opened and migrated at start-up (services with tables only).
        lib("ServiceStore", ["ServiceKit", "MeshStore", "MeshDomain", log, argParser]),
        lib("MeshAuth", ["MeshDomain", "MeshProto", crypto, .product(name: "JWTKit", package: "jwt-kit")]),
        lib("MeshDNS", ["MeshNet", log, nioCore, nioPosix, lifecycle, treeCollections]),
        // The per-tenant certificate authority and the node certificates of the phone fallback (swift-certificates).
        lib("MeshPKI", [x509, asn1, crypto]),
        // A node's HTTPS front on its mesh addresses (TLS with swift-nio-ssl, proxied to the gateway beside it).
        lib("MeshHTTPS", ["MeshPKI", log, nioCore, nioPosix, nioSSL, lifecycle]),
        // The phone fallback's reference client: the relay while it is healthy, the nodes' mesh URLs when it degrades.
        lib("RelayClient", ["MeshDNS", "MeshNet", log, nioCore, nioPosix, nioHTTP1, nioSSL, .product(name: "NIOTLS", package: "swift-nio"), lifecycle, x509]),
        // nkeys, NATS JWTs, the bus permission policy and `meshctl bus init` (docs/security.md).
        lib("MeshBusAuth", ["MeshDomain", crypto]),

        // MARK: Services: logic in *Core, thin executables.
        lib("AllocatorCore", ["MeshNet", "MeshBus", "MeshStore", "ServiceStore", "MeshProto", "MeshDomain", "MeshClient", "ServiceKit", log, metrics, lifecycle]),
        exe("AllocatorSvc", ["AllocatorCore", "ServiceKit", argParser, lifecycle]),
        lib("ProvisionCore", ["MeshKeys", "MeshNet", "MeshBus", "MeshBusAuth", "MeshStore", "ServiceStore", "MeshProto", "MeshDomain", "MeshClient", "ServiceKit",
                              "MeshQR", "MeshPKI", log, metrics, lifecycle, crypto]),
        exe("ProvisionSvc", ["ProvisionCore", "ServiceKit", argParser, lifecycle, crypto]),
        lib("FanoutCore", ["MeshNet", "MeshBus", "MeshStore", "ServiceStore", "MeshProto", "MeshDomain", "MeshClient", "ServiceKit", log, metrics, lifecycle]),
        exe("FanoutSvc", ["FanoutCore", "ServiceKit", argParser, lifecycle]),
        lib("NodeApplierCore", ["MeshKeys", "MeshSpawn", "MeshBus", "MeshBusAuth", "MeshWireGuard", "MeshDNS", "MeshPKI", "MeshHTTPS", "MeshProto", "MeshDomain", "MeshClient", "ServiceKit", log,
                                metrics, lifecycle, crypto, treeCollections]),
        exe("NodeApplier", ["NodeApplierCore", "MeshNet", "ServiceKit", argParser, lifecycle]),
        lib("GatewayCore", ["MeshNet", "MeshBus", "MeshProto", "MeshDomain", "MeshClient", "ServiceKit", "MeshAuth", log, metrics, lifecycle, crypto,
                            nioCore, nioHTTP1, .product(name: "AsyncHTTPClient", package: "async-http-client"),
                            .product(name: "Hummingbird", package: "hummingbird"),
                            .product(name: "HummingbirdTLS", package: "hummingbird")],
            resources: [.copy("Web")]),
        exe("Gateway", ["GatewayCore", "ServiceKit", argParser, lifecycle]),
        exe("meshctl", ["RelayClient", "MeshClient", "MeshBus", "MeshBusAuth", "MeshAuth", "MeshDomain", "MeshProto", "ServiceKit", argParser, log, lifecycle, jwt]),

        // MARK: Test support and tests (real NATS, PostgreSQL and WireGuard; see scripts/test.sh).
        lib("MeshTestSupport", ["MeshKeys", "MeshSpawn", "MeshBus", "MeshBusAuth", "MeshStore", "MeshDomain", "MeshProto", "MeshClient", "MeshAuth", log, protobuf]),
        // A lab for tests written outside Swift (the browser test): JSON lines on stdout, commands on stdin.
        exe("meshlab", ["MeshTestSupport", "MeshAuth", "MeshBus", "MeshDomain", "MeshProto", jwt]),
        tests("MeshNetTests", ["MeshNet"]),
        tests("MeshDomainTests", ["MeshDomain", "MeshProto", "MeshNet"]),
        tests("MeshBusTests", ["MeshBus", "MeshDomain", "MeshClient", "ServiceKit", "MeshTestSupport", lifecycle]),
        tests("MeshStoreTests", ["MeshStore", "MeshTestSupport"]),
        tests("MeshQRTests", ["MeshQR", "MeshTestSupport"]),
        tests("AllocatorTests", ["AllocatorCore", "MeshTestSupport", "MeshDomain", "MeshClient", "MeshProto", "MeshBus", "MeshStore", "MeshNet"]),
        tests("ProvisionTests", ["MeshKeys", "MeshPKI", x509, crypto, "ProvisionCore", "MeshClient", "MeshTestSupport", "MeshDomain", "MeshAuth", "MeshProto", "MeshBus", "MeshStore", "MeshNet",
                                 "MeshQR", protobuf]),
        // The provisioning rules through ProvisionSvc's services on the in-memory store: no servers.
        tests("ProvisionUnitTests", ["ProvisionCore", "MeshDomain", "MeshProto", log]),
        tests("FanoutTests", ["NodeApplierCore", "MeshWireGuard", "MeshKeys", "FanoutCore", "MeshClient", "MeshTestSupport", "MeshDomain", "MeshProto", "MeshBus", "MeshStore"]),
        tests("MeshE2ETests", ["MeshTestSupport", "MeshClient", "MeshDomain", "MeshProto", "MeshWireGuard", log]),
        tests("FaultTests", ["MeshTestSupport", "MeshClient", "MeshDomain", "MeshProto", "MeshBus", "MeshStore"]),
        tests("NodeApplierTests", ["NodeApplierCore", "MeshSpawn", "MeshClient", "MeshWireGuard", "MeshNet", "MeshDomain", "MeshProto", "MeshTestSupport", log]),
        tests("ClusterTests", ["MeshKeys", "MeshTestSupport", "MeshClient", "MeshDomain", "MeshProto", "MeshBus", "MeshStore", "MeshWireGuard", "NodeApplierCore", log,
                               protobuf]),
        tests("ProtoInteropTests", ["ProtoInterop", "MeshProto", "MeshTestSupport", protobuf]),
        tests("GatewayTests", ["MeshKeys", "GatewayCore", "MeshClient", "MeshTestSupport", "MeshDomain", "MeshAuth", "ServiceKit", "MeshProto", "MeshBus", "MeshStore", lifecycle,
                               .product(name: "Hummingbird", package: "hummingbird"),
                               .product(name: "HummingbirdTesting", package: "hummingbird"),
                               .product(name: "AsyncHTTPClient", package: "async-http-client"), nioCore,
                               .product(name: "JWTKit", package: "jwt-kit")]),
        tests("MeshWireGuardTests", ["MeshWireGuard", "MeshNet", "MeshTestSupport", log]),
        tests("BusSecurityTests", ["MeshKeys", "MeshBusAuth", "MeshBus", "MeshTestSupport", "MeshClient", "MeshDomain", "MeshProto", "MeshStore", "NodeApplierCore",
                                   "ProvisionCore", log]),
        tests("MeshDNSTests", ["MeshDNS", "MeshNet", log, nioCore, nioPosix, lifecycle]),
        // The built executables from outside: their settings against docs/configuration.md, and what they link.
        tests("ExecutableTests", ["MeshTestSupport"]),
        // The phone fallback: the tenant CA, the nodes' HTTPS front and the relay client (real TCP, TLS, WireGuard).
        tests("FallbackTests", ["MeshBus", "MeshPKI", "MeshHTTPS", "RelayClient", "NodeApplierCore", "MeshAuth", "MeshTestSupport", "MeshClient", "MeshDomain", "MeshProto", "MeshNet",
                                "MeshDNS", "MeshKeys", log, nioCore, nioPosix, nioSSL, x509, crypto]),

        // MARK: Benchmarks (scripts/bench.sh and scripts/bench-*.sh build them in release mode; Benchmarks/c holds C references).
        bench("WireGuardBench", ["MeshWireGuard", "MeshNet", log]),
        bench("PolicyBench", ["MeshTestSupport", "MeshBus", "MeshClient", "MeshDomain", "MeshNet", "MeshProto", "NodeApplierCore", log]),
        bench("FanoutBench", ["MeshKeys", "MeshTestSupport", "MeshClient", "MeshDomain", "MeshProto", "MeshBus", "MeshWireGuard", "NodeApplierCore", log,
                              treeCollections]),
        bench("JSONBench", ["BenchSupport", "GatewayCore", "MeshDomain", "MeshProto"]),
        bench("GatewayBench", [.product(name: "Hummingbird", package: "hummingbird"), log]),
        bench("DNSBench", ["MeshDNS", "MeshNet", log, nioCore, nioPosix, lifecycle]),
        .target(name: "BenchSupport", path: "Benchmarks/BenchSupport", swiftSettings: strict),
        bench("BusBench", ["BenchSupport", "MeshBus", log]),
        bench("StoreBench", ["BenchSupport", "MeshStore", "MeshTestSupport", log]),
        bench("AllocatorBench", ["BenchSupport", "MeshBus", "MeshClient", "MeshDomain", "MeshProto", "MeshStore", "MeshTestSupport", log]),
        bench("ProvisionBench", ["MeshKeys", "BenchSupport", "MeshBus", "MeshClient", "MeshDomain", "MeshAuth", "MeshNet", "MeshProto", "MeshQR", "MeshStore",
                                 "MeshTestSupport", "ProvisionCore", log]),
    ]
)
