// DNSBench: the mesh DNS server and its inputs, for load tests (scripts/bench-dns.sh drives it with dnsperf).
//
//   DNSBench serve   [--address 127.0.0.1] [--port 5353] [--records 1000]   serve until SIGINT/SIGTERM
//   DNSBench queries [--records 1000] [--count 10000]                       print a dnsperf query file
//   DNSBench inprocess [--records 1000] [--seconds 3]                       responder + encoding, no sockets
//   DNSBench load    [--address 127.0.0.1] [--port 5353] [--rate 20000] [--seconds 10] [--outstanding 200]
//                    open-loop UDP load at a fixed rate (or closed-loop with --rate 0), latency percentiles
//   DNSBench echo    [--address 127.0.0.1] [--port 5399]                    bare UDP echo: the baseline round trip
import Logging
import MeshDNS
import MeshNet
import NIOCore
import NIOPosix
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

/// The value after `--name`, or the fallback.
func option(_ name: String, _ fallback: String) -> String {
    let args = CommandLine.arguments
    guard let i = args.firstIndex(of: "--\(name)"), i + 1 < args.count else { return fallback }
    return args[i + 1]
}

/// A synthetic mesh: device `dev-N` has 100.64.x.y and fd7a:115c:a1e0::N.
func syntheticRecords(_ count: Int) -> [MeshDNSRecord] {
    (1...max(1, count)).map { n in
        MeshDNSRecord(name: "dev-\(n)", addresses: [
            .v4(IPv4Address(0x6440_0000 + UInt32(n))),
            .v6(IPv6Address(high: 0xfd7a_115c_a1e0_0000, low: UInt64(n))),
        ])
    }
}

/// The query mix: 45 % A and 45 % AAAA for existing devices, 10 % names that do not exist (NXDOMAIN).
func queryLines(records: Int, count: Int) -> [String] {
    var rng = SystemRandomNumberGenerator()
    return (0..<count).map { i in
        let n = Int.random(in: 1...max(1, records), using: &rng)
        switch i % 10 {
        case 9: return "missing-\(n).quazzar.mesh A"
        case let k where k % 2 == 0: return "dev-\(n).quazzar.mesh A"
        default: return "dev-\(n).quazzar.mesh AAAA"
        }
    }
}

let logger = Logger(label: "dnsbench")
let records = Int(option("records", "1000")) ?? 1000
let zone = MeshDNSZone(configuration: try MeshDNSZoneConfiguration(), logger: logger)
zone.replace(records: syntheticRecords(records), revision: 1)

switch CommandLine.arguments.dropFirst().first ?? "" {
case "serve":
    guard let address = IPAddress(option("address", "127.0.0.1")), let port = UInt16(option("port", "5353")) else {
        print("bad --address or --port")
        exit(2)
    }
    // One thread: the benchmark measures what a single core does.
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let server = MeshDNSServer(zone: zone, configuration: MeshDNSServerConfiguration(listenAddresses: [address], port: port),
                               eventLoopGroup: group, logger: logger)
    let services = ServiceGroup(configuration: .init(services: [server], gracefulShutdownSignals: [.sigterm, .sigint],
                                                     logger: logger))
    try await services.run()
    try await group.shutdownGracefully()

case "queries":
    let count = Int(option("count", "10000")) ?? 10000
    for line in queryLines(records: records, count: count) { print(line) }

case "inprocess":
    // Parse, look up and encode, as the UDP handler does, without the kernel: the ceiling for one core.
    let seconds = Double(option("seconds", "3")) ?? 3
    let responder = MeshDNSResponder(zone: zone)
    let queries: [[UInt8]] = try queryLines(records: records, count: 4096).enumerated().map { i, line in
        let parts = line.split(separator: " ")
        return DNSMessage(header: DNSHeader(id: UInt16(i), recursionDesired: true),
                          questions: [DNSQuestion(name: try DNSName(String(parts[0])), type: parts[1] == "A" ? .a : .aaaa)],
                          edns: DNSEDNS(udpPayloadSize: 1232)).serialized()
    }
    let allocator = ByteBufferAllocator()
    var buffer = allocator.buffer(capacity: 512)
    var done = 0
    var bytes = 0
    let clock = ContinuousClock()
    let start = clock.now
    let deadline = start + .milliseconds(Int(seconds * 1000))
    while clock.now < deadline {
        for query in queries {
            guard case .reply(let reply, let maxSize) = query.withUnsafeBytes({ responder.respond(to: $0, transport: .udp) })
            else { continue }
            buffer.clear()
            reply.write(to: &buffer, maxSize: maxSize)
            bytes &+= buffer.readableBytes
        }
        done += queries.count
    }
    let elapsed = clock.now - start
    let perSecond = Double(done) / (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
    print("inprocess: \(done) queries in \(elapsed), \(Int(perSecond)) queries/s on one thread (\(bytes) reply bytes)")

case "load":
    guard let port = UInt16(option("port", "5353")) else {
        print("bad --port")
        exit(2)
    }
    let result = runLoad(address: option("address", "127.0.0.1"), port: port, records: records,
                         rate: Int(option("rate", "20000")) ?? 20000, seconds: Double(option("seconds", "10")) ?? 10,
                         outstanding: Int(option("outstanding", "200")) ?? 200)
    print(result)

case "echo":
    guard let port = UInt16(option("port", "5399")) else {
        print("bad --port")
        exit(2)
    }
    runEcho(address: option("address", "127.0.0.1"), port: port)

default:
    print("usage: DNSBench serve|queries|inprocess|load|echo [--records N] [--address A] [--port P] [--count N] [--seconds S]")
    exit(2)
}
