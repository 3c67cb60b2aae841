import MeshDNS
import MeshNet
import NIOCore
import Testing

/// Builds hostile variants of valid messages: bit flips, cuts, random lengths, rewritten counts and
/// compression-pointer tricks aimed at the name decoder.
struct Mutator {
    var rng: SplitMix64
    let seeds: [[UInt8]]

    init(seed: UInt64) throws {
        rng = SplitMix64(seed: seed)
        seeds = [
            try makeQuery("laptop-3f2a.quazzar.mesh", .a),
            try makeQuery("node-a.quazzar.mesh", .aaaa, edns: DNSEDNS(udpPayloadSize: 4096)),
            try makeQuery("quazzar.mesh", .soa, edns: DNSEDNS(udpPayloadSize: 1232, dnssecOK: true,
                                                               options: [DNSEDNSOption(code: 10, data: [1, 2, 3, 4, 5, 6, 7, 8])])),
            try makeQuery("ghost.quazzar.mesh", .any),
            try makeQuery("example.com", .a),
            try DNSCodecTests.sampleResponse().serialized(),
        ]
    }

    mutating func byte() -> UInt8 { UInt8.random(in: 0 ... 255, using: &rng) }
    mutating func index(_ count: Int) -> Int { Int.random(in: 0..<max(1, count), using: &rng) }

    mutating func next() -> [UInt8] {
        var m = seeds[index(seeds.count)]
        switch index(9) {
        case 0:
            // A few random bit flips anywhere.
            for _ in 0...index(8) {
                let i = index(m.count)
                m[i] ^= 1 << UInt8(index(8))
            }
        case 1:
            m = Array(m.prefix(index(m.count)))
        case 2:
            m = (0..<index(600)).map { _ in byte() }
        case 3:
            // A compression pointer dropped somewhere after the header, pointing anywhere.
            let i = DNSMessage.headerSize + index(m.count - DNSMessage.headerSize - 1)
            m[i] = 0xc0 | (byte() & 0x3f)
            m[i + 1] = byte()
        case 4:
            // A pointer to itself or just after itself (loops and forward pointers).
            let i = DNSMessage.headerSize + index(m.count - DNSMessage.headerSize - 1)
            let target = i + index(3)
            m[i] = 0xc0 | UInt8(target >> 8 & 0x3f)
            m[i + 1] = UInt8(target & 0xff)
        case 5:
            // Section counts that disagree with the body.
            for i in 4..<12 where index(3) == 0 { m[i] = byte() }
        case 6:
            // A label length that overruns, or uses the reserved 01/10 label types.
            let i = DNSMessage.headerSize + index(m.count - DNSMessage.headerSize)
            m[i] = [0x3f, 0x40, 0x80, 0xbf, 0xff][index(5)]
        case 7:
            m += (0..<index(40)).map { _ in byte() }
        default:
            // Random bytes spliced into the middle.
            let i = index(m.count)
            m.insert(contentsOf: (0..<index(20)).map { _ in byte() }, at: i)
        }
        return m
    }
}

@Suite(.timeLimit(.minutes(5))) struct FuzzTests {
    /// Every decoded message must re-encode to something that decodes to the same message, and the
    /// responder must never trap and only ever produce replies that are valid, sized and matched by id.
    @Test(arguments: [UInt64(1), 2, 3, 0xdead_beef])
    func codecAndResponderSurviveMutations(seed: UInt64) throws {
        var mutator = try Mutator(seed: seed)
        let zone = try sampleZone()
        let responder = MeshDNSResponder(zone: zone)
        let forwarding = MeshDNSResponder(zone: zone, forwardsOutsideZone: true)
        var parsed = 0, replies = 0, drops = 0
        for _ in 0..<5000 {
            let input = mutator.next()
            if let message = try? DNSMessage(parsing: input) {
                parsed += 1
                let reencoded = message.serialized()
                let again = try DNSMessage(parsing: reencoded)
                #expect(again == message, "seed \(seed): round trip changed \(input)")
            }
            for transport in [MeshDNSTransport.udp, .tcp] {
                switch responder.respond(to: input, transport: transport) {
                case .drop:
                    drops += 1
                    #expect(input.count < 12 || input[2] & 0x80 != 0, "seed \(seed): dropped a query \(input)")
                case .forward:
                    Issue.record("seed \(seed): forward without a forward policy")
                case .reply(let reply, let maxSize):
                    replies += 1
                    let bytes = reply.serialized(maxSize: maxSize)
                    #expect(bytes.count <= maxSize)
                    let decoded = try DNSMessage(parsing: bytes)
                    #expect(decoded.header.isResponse)
                    #expect(decoded.header.id == UInt16(input[0]) << 8 | UInt16(input[1]))
                }
            }
            _ = forwarding.respond(to: input, transport: .udp)
        }
        // The mutations must exercise both the accepting and the rejecting paths.
        #expect(parsed > 500 && replies > 1000 && drops > 100, "parsed \(parsed), replies \(replies), drops \(drops)")
    }
}

extension ServerTests {
    @Test func serverSurvivesHostilePacketsOverUDPAndTCP() async throws {
        let zone = try sampleZone()
        try await withServer(zone: zone, configure: { config in
            config.tcpIdleTimeout = .seconds(2)
            config.maxTCPConnections = 64
        }) { server, port async throws in
            var mutator = try Mutator(seed: 0x5eed)
            let valid = try makeQuery("printer.quazzar.mesh", .a, id: 0x7777)

            // UDP: 3,000 hostile datagrams, then a valid query as an end marker; every reply up to the
            // marker's must be a well-formed response. (The 60 s receive timeout only bounds a hang.)
            let udp = try RawSocket.udp(receiveTimeoutMillis: 60_000)
            for _ in 0..<3000 { udp.send(mutator.next(), toPort: port) }
            let marker = try makeQuery("printer.quazzar.mesh", .a, id: 0x6666)
            udp.send(marker, toPort: port)
            let markerName = try DNSName("printer.quazzar.mesh")
            var received = 0, sawMarker = false
            while !sawMarker, let reply = udp.receiveDatagram() {
                let message = try DNSMessage(parsing: reply)
                #expect(message.header.isResponse)
                if message.header.id == 0x6666 && message.questions.first?.name == markerName {
                    sawMarker = true
                } else {
                    received += 1
                }
            }
            #expect(sawMarker, "the server did not answer a valid query after the hostile ones")
            #expect(received > 1000)

            // TCP: hostile frames on many connections, some with lying length prefixes or raw garbage.
            for connection in 0..<30 {
                let tcp = try RawSocket.tcp(port: port, receiveTimeoutMillis: 150)
                var stream: [UInt8] = []
                for _ in 0..<50 { stream += framed(mutator.next()) }
                if connection % 3 == 0 { stream += mutator.next() }
                tcp.write(stream)
                // Read whatever answers arrive; each must parse. The stream may stall on a lying prefix.
                while let frame = tcp.readFrame() {
                    #expect(try DNSMessage(parsing: frame).header.isResponse)
                }
            }

            // The server still answers, on both transports.
            udp.setTimeout(millis: 5000)
            udp.send(valid, toPort: port)
            var answered: DNSMessage?
            while let reply = udp.receiveDatagram() {
                let message = try DNSMessage(parsing: reply)
                if message.header.id == 0x7777 {
                    answered = message
                    break
                }
            }
            #expect(answered?.answers.map(\.data) == [.a(IPv4Address(100, 64, 0, 9))])
            let tcp = try RawSocket.tcp(port: port)
            #expect(tcp.write(framed(valid)))
            #expect(try DNSMessage(parsing: try #require(tcp.readFrame())).answers.count == 1)
            #expect(try await digShort(port: port, "laptop-3f2a.quazzar.mesh", "A") == ["100.64.0.7"])
            #expect(server.status().serving)
        }
    }
}
