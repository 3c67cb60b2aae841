import Foundation
import Logging
import MeshDNS
import MeshNet
import NIOCore
import ServiceLifecycle
import Testing

/// Serialized: these tests block on sockets, and running them one at a time keeps their timing checks
/// (idle timeout, shutdown time) independent of each other.
@Suite(.timeLimit(.minutes(5)), .serialized) struct ServerTests {
    @Test func digResolvesOverUDPAndTCP() async throws {
        let zone = try sampleZone()
        try await withServer(zone: zone) { _, port async throws in
            for transport in [[], ["+tcp"]] {
                #expect(try await digShort(port: port, "laptop-3f2a.quazzar.mesh", "A", transport) == ["100.64.0.7"])
                #expect(try await digShort(port: port, "laptop-3f2a.quazzar.mesh", "AAAA", transport) == ["fd7a:115c:a1e0::7"])
                #expect(try await digShort(port: port, "node-a.quazzar.mesh", "A", transport) == ["100.64.0.2"])
                #expect(try await digShort(port: port, "quazzar.mesh", "SOA", transport)
                    == ["ns.quazzar.mesh. hostmaster.quazzar.mesh. 17 3600 600 86400 10"])
                #expect(try await digShort(port: port, "quazzar.mesh", "NS", transport) == ["ns.quazzar.mesh."])
            }
        }
    }

    @Test func digSeesPreservedCaseFlagsAndEDNS() async throws {
        let zone = try sampleZone()
        try await withServer(zone: zone) { _, port async throws in
            let output = try await dig(["@127.0.0.1", "-p", "\(port)", "LapTop-3F2A.Quazzar.Mesh", "A"])
            #expect(output.contains("status: NOERROR"))
            #expect(output.contains("flags: qr aa rd;"))
            #expect(output.contains("LapTop-3F2A.Quazzar.Mesh. 10\tIN\tA\t100.64.0.7"))
            #expect(output.contains("; EDNS: version: 0, flags:; udp: 1232"))
            let noEDNS = try await dig(["@127.0.0.1", "-p", "\(port)", "+noedns", "printer.quazzar.mesh", "A"])
            #expect(noEDNS.contains("status: NOERROR"))
            #expect(!noEDNS.contains("OPT PSEUDOSECTION"))
            #expect(noEDNS.contains("100.64.0.9"))
            let badVersion = try await dig(["@127.0.0.1", "-p", "\(port)", "+edns=1", "+noednsnegotiation",
                                      "printer.quazzar.mesh", "A"])
            #expect(badVersion.contains("status: BADVERS"))
        }
    }

    @Test func nxdomainAndNodataCarrySOA() async throws {
        let zone = try sampleZone()
        try await withServer(zone: zone) { _, port async throws in
            for transport in [[], ["+tcp"]] {
                let missing = try await dig(["@127.0.0.1", "-p", "\(port)"] + transport + ["ghost.quazzar.mesh", "A"])
                #expect(missing.contains("status: NXDOMAIN"))
                #expect(missing.contains("AUTHORITY: 1"))
                #expect(missing.contains("SOA\tns.quazzar.mesh. hostmaster.quazzar.mesh. 17 3600 600 86400 10"))
                let nodata = try await dig(["@127.0.0.1", "-p", "\(port)"] + transport + ["printer.quazzar.mesh", "AAAA"])
                #expect(nodata.contains("status: NOERROR"))
                #expect(nodata.contains("ANSWER: 0, AUTHORITY: 1"))
            }
        }
    }

    @Test func outsideNamesAreRefused() async throws {
        let zone = try sampleZone()
        try await withServer(zone: zone) { _, port async throws in
            for transport in [[], ["+tcp"]] {
                let output = try await dig(["@127.0.0.1", "-p", "\(port)"] + transport + ["example.com", "A"])
                #expect(output.contains("status: REFUSED"))
            }
        }
    }

    @Test func truncationAndTCPRetry() async throws {
        let zone = try sampleZone()
        let addresses = (1...50).map { IPAddress.v6(IPv6Address(high: 0xfd7a_115c_a1e0_0000, low: UInt64($0))) }
        zone.upsert(MeshDNSRecord(name: "big", addresses: addresses), revision: 18)
        try await withServer(zone: zone) { _, port async throws in
            // 50 AAAA records are about 1.4 kB: over 512, so the UDP reply is truncated.
            let truncated = try await dig(["@127.0.0.1", "-p", "\(port)", "+bufsize=512", "+ignore", "big.quazzar.mesh", "AAAA"])
            #expect(truncated.contains("flags: qr aa tc rd;"))
            #expect(truncated.contains("ANSWER: 0,"))
            let noEDNS = try await dig(["@127.0.0.1", "-p", "\(port)", "+noedns", "+ignore", "big.quazzar.mesh", "AAAA"])
            #expect(noEDNS.contains(" tc "))
            // dig retries over TCP on TC and then gets everything.
            #expect(try await digShort(port: port, "big.quazzar.mesh", "AAAA", ["+bufsize=512"]).count == 50)
            #expect(try await digShort(port: port, "big.quazzar.mesh", "AAAA", ["+tcp"]).count == 50)
            // A client allowing 4096 bytes is still capped at our 1232, which 50 records exceed.
            let capped = try await dig(["@127.0.0.1", "-p", "\(port)", "+bufsize=4096", "+ignore", "big.quazzar.mesh", "AAAA"])
            #expect(capped.contains(" tc "))
            zone.upsert(MeshDNSRecord(name: "big", addresses: Array(addresses.prefix(30))), revision: 19)
            let fits = try await dig(["@127.0.0.1", "-p", "\(port)", "+bufsize=1232", "+ignore", "big.quazzar.mesh", "AAAA"])
            #expect(fits.contains("flags: qr aa rd;") && fits.contains("ANSWER: 30,"))
        }
    }

    @Test func updatesTakeEffectBeforeTheCallReturns() async throws {
        let zone = try sampleZone()
        try await withServer(zone: zone) { _, port async throws in
            #expect(try await digShort(port: port, "printer.quazzar.mesh", "A") == ["100.64.0.9"])
            zone.remove(name: "printer", revision: 18)
            #expect(try await digShort(port: port, "printer.quazzar.mesh", "A").isEmpty)
            #expect(try await dig(["@127.0.0.1", "-p", "\(port)", "printer.quazzar.mesh"]).contains("status: NXDOMAIN"))
            zone.replace(records: [MeshDNSRecord(name: "printer-2", addresses: [IPAddress("100.64.0.9")!])],
                         revision: 19)
            #expect(try await digShort(port: port, "printer-2.quazzar.mesh", "A") == ["100.64.0.9"])
            #expect(try await digShort(port: port, "laptop-3f2a.quazzar.mesh", "A").isEmpty)
            #expect(try await digShort(port: port, "quazzar.mesh", "SOA").first?.contains(" 19 ") == true)
            zone.upsert(MeshDNSRecord(name: "printer-2", addresses: [IPAddress("100.64.0.11")!]), revision: 20)
            #expect(try await digShort(port: port, "printer-2.quazzar.mesh", "A", ["+tcp"]) == ["100.64.0.11"])
        }
    }

    @Test func forwardsOutsideNamesToUpstream() async throws {
        let upstreamZone = MeshDNSZone(configuration: try MeshDNSZoneConfiguration(origin: "upstream.test"),
                                       logger: quietLogger)
        let many = (1...50).map { IPAddress.v6(IPv6Address(high: 0x2001_0db8_0000_0000, low: UInt64($0))) }
        upstreamZone.replace(records: [MeshDNSRecord(name: "www", addresses: [IPAddress("192.0.2.80")!]),
                                       MeshDNSRecord(name: "big", addresses: many)], revision: 5)
        try await withServer(zone: upstreamZone) { _, upstreamPort async throws in
            let zone = try sampleZone()
            try await withServer(zone: zone, configure: { config in
                config.outsideZonePolicy = .forward(to: [HostPort(host: "127.0.0.1", port: UInt16(upstreamPort))])
            }) { _, port async throws in
                for transport in [[], ["+tcp"]] {
                    #expect(try await digShort(port: port, "www.upstream.test", "A", transport) == ["192.0.2.80"])
                    let missing = try await dig(["@127.0.0.1", "-p", "\(port)"] + transport + ["nope.upstream.test", "A"])
                    #expect(missing.contains("status: NXDOMAIN"))
                    #expect(missing.contains("upstream.test.\t\t10\tIN\tSOA"), "the upstream's SOA is relayed")
                    // The upstream refuses names outside its own zone; that answer is relayed too.
                    #expect(try await dig(["@127.0.0.1", "-p", "\(port)"] + transport + ["example.com"]).contains("status: REFUSED"))
                    // A reply too big for UDP reaches the client whole: a UDP client sees TC and retries over
                    // TCP, and for a TCP client the forwarder fetches the truncated answer again over TCP.
                    #expect(try await digShort(port: port, "big.upstream.test", "AAAA", transport + ["+bufsize=512"]).count == 50)
                    // The mesh zone is still answered locally, with recursion available.
                    let local = try await dig(["@127.0.0.1", "-p", "\(port)"] + transport + ["printer.quazzar.mesh"])
                    #expect(local.contains("flags: qr aa rd ra;") && local.contains("100.64.0.9"))
                }
            }
        }
    }

    @Test func deadUpstreamGivesServFail() async throws {
        // Two upstreams that take queries and never answer: UDP sockets of our own, bound to a port
        // by a first send, that nobody reads until the end.
        var upstreams: [(RawSocket, UInt16)] = []
        for _ in 0..<2 {
            let probe = try RawSocket.udp()
            probe.send([0], toPort: 9)
            var address = sockaddr_in()
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            _ = withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(probe.fd, $0, &length) }
            }
            upstreams.append((probe, UInt16(bigEndian: address.sin_port)))
        }
        let zone = try sampleZone()
        try await withServer(zone: zone, configure: { config in
            config.outsideZonePolicy = .forward(to: upstreams.map { HostPort(host: "127.0.0.1", port: $0.1) })
            config.forwardTimeout = .milliseconds(200)
        }) { _, port async throws in
            let output = try await dig(["@127.0.0.1", "-p", "\(port)", "example.com", "A"])
            #expect(output.contains("status: SERVFAIL"))
            #expect(output.contains("example.com.\t\t\tIN\tA"), "the question is echoed")
            // Both upstreams were asked, one after the other, before giving up.
            for (i, (probe, _)) in upstreams.enumerated() {
                let query = try #require(probe.receiveDatagram(), "upstream \(i) was never asked")
                #expect(try DNSMessage(parsing: query).questions.first?.name == (try DNSName("example.com")), "upstream \(i)")
            }
            #expect(try await dig(["@127.0.0.1", "-p", "\(port)", "+tcp", "example.com", "A"]).contains("status: SERVFAIL"))
        }
    }

    @Test func forwardsBeyondTheLimitFailAtOnce() async throws {
        let probe = try RawSocket.udp()
        probe.send([0], toPort: 9)
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(probe.fd, $0, &length) }
        }
        let deadPort = UInt16(bigEndian: address.sin_port)
        let zone = try sampleZone()
        try await withServer(zone: zone, configure: { config in
            config.outsideZonePolicy = .forward(to: [HostPort(host: "127.0.0.1", port: deadPort)])
            config.forwardTimeout = .seconds(3)
            config.maxPendingForwards = 1
        }) { _, port async throws in
            let client = try RawSocket.udp(receiveTimeoutMillis: 1000)
            client.send(try makeQuery("one.example", .a, id: 1), toPort: port)
            client.send(try makeQuery("two.example", .a, id: 2), toPort: port)
            // The first waits for the dead upstream; the second is over the limit and fails at once.
            let reply = try DNSMessage(parsing: try #require(client.receiveDatagram()))
            #expect(reply.header.id == 2)
            #expect(reply.responseCode == .serverFailure)
            #expect(reply.questions.first?.name == (try DNSName("two.example")))
        }
    }

    @Test func tcpPipeliningIdleTimeoutAndConnectionLimit() async throws {
        let zone = try sampleZone()
        try await withServer(zone: zone, configure: { config in
            config.tcpIdleTimeout = .milliseconds(1500)
            config.maxTCPConnections = 2
        }) { _, port async throws in
            let first = try RawSocket.tcp(port: port)
            // Two queries in one write: both are answered, in order.
            let a = try makeQuery("printer.quazzar.mesh", .a, id: 1)
            let b = try makeQuery("node-a.quazzar.mesh", .aaaa, id: 2)
            #expect(first.write(framed(a) + framed(b)))
            let replyA = try DNSMessage(parsing: try #require(first.readFrame()))
            let replyB = try DNSMessage(parsing: try #require(first.readFrame()))
            #expect(replyA.header.id == 1 && replyA.answers.map(\.data) == [.a(IPv4Address(100, 64, 0, 9))])
            #expect(replyB.header.id == 2 && replyB.answers.count == 1)
            // A query split across writes is reassembled.
            let c = framed(try makeQuery("laptop-3f2a.quazzar.mesh", .a, id: 3))
            #expect(first.write(Array(c.prefix(5))))
            // A pause between the two writes so that they travel apart (nothing is awaited).
            try await Task.sleep(for: .milliseconds(50))
            #expect(first.write(Array(c.dropFirst(5))))
            #expect(try DNSMessage(parsing: try #require(first.readFrame())).header.id == 3)

            let second = try RawSocket.tcp(port: port)
            #expect(second.write(framed(a)))
            #expect(second.readFrame() != nil)
            // The third connection is over the limit and is closed at once.
            let third = try RawSocket.tcp(port: port)
            third.write(framed(a))
            #expect(third.isClosedByPeer())

            // Left idle past the timeout, connections are closed by the server. (Without the idle
            // timeout they would stay open for ever; the wait allows for a loaded machine.)
            first.setTimeout(millis: 30_000)
            second.setTimeout(millis: 30_000)
            #expect(first.isClosedByPeer())
            #expect(second.isClosedByPeer())
            // With the slots free again, new connections are served.
            let fourth = try RawSocket.tcp(port: port)
            #expect(fourth.write(framed(a)))
            #expect(fourth.readFrame() != nil)
        }
    }

    @Test func tcpClientThatReadsSlowlyGetsEveryAnswer() async throws {
        let zone = try sampleZone()
        try await withServer(zone: zone) { _, port async throws in
            // Far more replies than the socket buffers hold: the server must stop reading while the client
            // is not reading, and resume when it does, without losing or reordering anything.
            let count = 50_000
            let client = try RawSocket.tcp(port: port, receiveTimeoutMillis: 10_000)
            var stream: [UInt8] = []
            for i in 0..<count { stream += framed(try makeQuery("printer.quazzar.mesh", .a, id: UInt16(i & 0xffff))) }
            let payload = stream
            let writer = Thread { client.write(payload) }
            writer.start()
            // The client starts reading late, so that the server meets full socket buffers (a
            // pause that shapes the test, not a wait for anything).
            try await Task.sleep(for: .milliseconds(300))
            let answered = try await offPool {
                var answered = 0
                while answered < count, let frame = client.readFrame() {
                    let reply = try DNSMessage(parsing: frame)
                    guard reply.header.id == UInt16(answered & 0xffff), reply.answers.count == 1 else { break }
                    answered += 1
                }
                return answered
            }
            #expect(answered == count)
        }
    }

    @Test func statusReportsServingState() async throws {
        let zone = try sampleZone()
        let config = MeshDNSServerConfiguration(listenAddresses: [IPAddress("127.0.0.1")!, IPAddress("::1")!], port: 0)
        let server = MeshDNSServer(zone: zone, configuration: config, logger: quietLogger)
        #expect(!server.status().serving)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await server.run() }
            let addresses = try await server.listeningAddresses()
            #expect(addresses.count == 4)
            let status = server.status()
            #expect(status.serving)
            #expect(status.zone == "quazzar.mesh")
            #expect(status.recordCount == 7)
            #expect(status.nameCount == 5)
            #expect(status.revision == 17)
            #expect(status.lastUpdate != nil)
            let port = try #require(addresses[0].port)
            #expect(status.listenAddresses.contains("udp://127.0.0.1:\(port)"))
            #expect(status.listenAddresses.contains("tcp://127.0.0.1:\(port)"))
            #expect(status.listenAddresses.contains { $0.hasPrefix("udp://[::1]:") })
            // The IPv6 listener answers too.
            let v6Port = try #require(addresses[2].port)
            let output = try await dig(["@::1", "-p", "\(v6Port)", "+short", "printer.quazzar.mesh", "A"])
            #expect(output.split(separator: "\n") == ["100.64.0.9"])

            let json = String(decoding: try JSONEncoder().encode(status), as: UTF8.self)
            #expect(json.contains("\"record_count\":7") && json.contains("\"listen_addresses\""))
            group.cancelAll()
            try await group.waitForAll()
        }
        #expect(!server.status().serving)
    }

    @Test func gracefulShutdownThroughServiceGroup() async throws {
        let zone = try sampleZone()
        let config = MeshDNSServerConfiguration(listenAddresses: [IPAddress("127.0.0.1")!], port: 0)
        let server = MeshDNSServer(zone: zone, configuration: config, logger: quietLogger)
        let group = ServiceGroup(services: [server], logger: quietLogger)
        var servedPort = 0
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            let port = try #require(try await server.listeningAddresses().first?.port)
            servedPort = port
            #expect(try await digShort(port: port, "printer.quazzar.mesh", "A") == ["100.64.0.9"])
            await group.triggerGracefulShutdown()
            // It stops (the suite's time limit keeps a regression from hanging the run).
            try await tasks.waitForAll()
        }
        #expect(!server.status().serving)
        // The sockets are closed: nothing answers on that port any more.
        let after = try await dig(["@127.0.0.1", "-p", "\(servedPort)", "+time=1", "printer.quazzar.mesh"])
        #expect(!after.contains("100.64.0.9"))
        #expect(!after.contains("status:"))
    }

    @Test func bindFailureIsReported() async throws {
        let zone = try sampleZone()
        let taken = MeshDNSServer(zone: zone, configuration: MeshDNSServerConfiguration(
            listenAddresses: [IPAddress("127.0.0.1")!], port: 0), logger: quietLogger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await taken.run() }
            let port = try #require(try await taken.listeningAddresses().first?.port)
            let clash = MeshDNSServer(zone: zone, configuration: MeshDNSServerConfiguration(
                listenAddresses: [IPAddress("127.0.0.1")!], port: UInt16(port)), logger: quietLogger)
            await #expect(throws: (any Error).self) { try await clash.run() }
            await #expect(throws: (any Error).self) { try await clash.listeningAddresses() }
            #expect(!clash.status().serving)
            let none = MeshDNSServer(zone: zone, configuration: MeshDNSServerConfiguration(listenAddresses: []),
                                     logger: quietLogger)
            await #expect(throws: MeshDNSServerError.nothingToListenOn) { try await none.run() }
            group.cancelAll()
            try await group.waitForAll()
        }
    }

    @Test func bindsMeshAddressesBeforeTheyExist() async throws {
        // Documentation-range addresses that no interface here has; nothing is ever sent to them.
        let absent = [IPAddress("198.51.100.53")!, IPAddress("fd00:dead:beef::53")!]
        let zone = try sampleZone()
        let strict = MeshDNSServer(zone: zone, configuration: MeshDNSServerConfiguration(listenAddresses: absent, port: 0),
                                   logger: quietLogger)
        await #expect(throws: (any Error).self) { try await strict.run() }

        let early = MeshDNSServer(zone: zone, configuration: MeshDNSServerConfiguration(
            listenAddresses: absent, port: 0, bindBeforeAddressExists: true), logger: quietLogger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await early.run() }
            let addresses = try await early.listeningAddresses()
            #expect(addresses.map(\.ipAddress) == ["198.51.100.53", "198.51.100.53", "fd00:dead:beef::53", "fd00:dead:beef::53"])
            #expect(early.status().serving)
            group.cancelAll()
            try await group.waitForAll()
        }
    }

    @Test func systemResolversFromResolvConf() throws {
        let path = "/tmp/mesh-dns-resolv-\(getpid()).conf"
        let text = "# comment\nsearch example\nnameserver 127.0.0.53\nnameserver\t::1\nnameserver fe80::1%eth0\n" +
            "nameserver 100.64.0.1\noptions edns0\n"
        #expect(FileManager.default.createFile(atPath: path, contents: Data(text.utf8)))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let resolvers = MeshDNSOutsideZonePolicy.systemResolvers(resolvConf: path, excluding: [IPAddress("100.64.0.1")!])
        #expect(resolvers == [HostPort(host: "127.0.0.53", port: 53), HostPort(host: "::1", port: 53)])
        #expect(MeshDNSOutsideZonePolicy.systemResolvers(resolvConf: "/nonexistent").isEmpty)
    }
}
