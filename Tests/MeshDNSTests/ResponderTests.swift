import Logging
import MeshDNS
import MeshNet
import Testing

#if canImport(Glibc)
import Glibc
#endif

let quietLogger = Logger(label: "mesh-dns-test", factory: { _ in SwiftLogNoOpLogHandler() })

/// A zone with a device, a node, an IPv4-only device and a two-label name (making `svc` an empty non-terminal).
func sampleZone(_ configure: (inout MeshDNSZoneConfiguration) -> Void = { _ in }) throws -> MeshDNSZone {
    var config = try MeshDNSZoneConfiguration(nameServerAddresses: [IPAddress("100.64.0.1")!])
    configure(&config)
    let zone = MeshDNSZone(configuration: config, logger: quietLogger)
    zone.replace(records: [
        MeshDNSRecord(name: "laptop-3f2a", addresses: [IPAddress("100.64.0.7")!, IPAddress("fd7a:115c:a1e0::7")!]),
        MeshDNSRecord(name: "node-a.quazzar.mesh", addresses: [IPAddress("100.64.0.2")!, IPAddress("fd7a:115c:a1e0::2")!]),
        MeshDNSRecord(name: "printer", addresses: [IPAddress("100.64.0.9")!]),
        MeshDNSRecord(name: "api.svc.quazzar.mesh.", addresses: [IPAddress("100.64.0.10")!]),
    ], revision: 17)
    return zone
}

/// Runs the responder on a query and decodes what it would send; nil for `.drop`, and fails on `.forward`.
func answer(_ responder: MeshDNSResponder, _ query: [UInt8], transport: MeshDNSTransport = .udp,
            sourceLocation: SourceLocation = #_sourceLocation) throws -> DNSMessage? {
    switch responder.respond(to: query, transport: transport) {
    case .drop:
        return nil
    case .forward:
        Issue.record("unexpected forward", sourceLocation: sourceLocation)
        return nil
    case .reply(let message, let maxSize):
        let bytes = message.serialized(maxSize: maxSize)
        #expect(bytes.count <= maxSize, sourceLocation: sourceLocation)
        return try DNSMessage(parsing: bytes)
    }
}

@Suite(.timeLimit(.minutes(5))) struct ResponderTests {
    let zone: MeshDNSZone
    let responder: MeshDNSResponder

    init() throws {
        zone = try sampleZone()
        responder = MeshDNSResponder(zone: zone)
    }

    @Test func answersAWithQuestionCasePreserved() throws {
        let reply = try #require(try answer(responder, makeQuery("LapTop-3F2A.Quazzar.MESH", .a, id: 77)))
        #expect(reply.header.id == 77)
        #expect(reply.header.isResponse && reply.header.isAuthoritative && reply.header.recursionDesired)
        #expect(!reply.header.recursionAvailable)
        #expect(reply.responseCode == .noError)
        #expect(reply.answers.map(\.data) == [.a(IPv4Address(100, 64, 0, 7))])
        #expect(reply.answers[0].name.description == "LapTop-3F2A.Quazzar.MESH.")
        #expect(reply.answers[0].ttl == 10)
        #expect(reply.authorities.isEmpty)
        #expect(reply.edns == nil, "no OPT in a reply to a query without one")
    }

    @Test func answersAAAAAndAny() throws {
        let aaaa = try #require(try answer(responder, makeQuery("node-a.quazzar.mesh", .aaaa)))
        #expect(aaaa.answers.map(\.data) == [.aaaa(IPv6Address("fd7a:115c:a1e0::2")!)])
        let any = try #require(try answer(responder, makeQuery("node-a.quazzar.mesh", .any)))
        #expect(Set(any.answers.map(\.data)) == [.a(IPv4Address(100, 64, 0, 2)), .aaaa(IPv6Address("fd7a:115c:a1e0::2")!)])
    }

    @Test func unknownNameIsNXDomainWithSOA() throws {
        let reply = try #require(try answer(responder, makeQuery("ghost.quazzar.mesh", .a)))
        #expect(reply.responseCode == .nameError)
        #expect(reply.header.isAuthoritative)
        #expect(reply.answers.isEmpty)
        let soa = try #require(reply.authorities.first)
        #expect(soa.name == (try DNSName("quazzar.mesh")))
        #expect(soa.ttl == 10)
        guard case .soa(let data) = soa.data else { Issue.record("not an SOA: \(soa)"); return }
        #expect(data.serial == 17)
        #expect(data.mname == (try DNSName("ns.quazzar.mesh")))
        #expect(data.rname == (try DNSName("hostmaster.quazzar.mesh")))
        #expect(data.minimum == 10)
        // Deeper names under an existing one do not exist either.
        #expect(try answer(responder, makeQuery("x.laptop-3f2a.quazzar.mesh", .a))?.responseCode == .nameError)
    }

    @Test func missingTypeIsNoData() throws {
        let reply = try #require(try answer(responder, makeQuery("printer.quazzar.mesh", .aaaa)))
        #expect(reply.responseCode == .noError)
        #expect(reply.answers.isEmpty)
        #expect(reply.authorities.first?.type == .soa)
        let mx = try #require(try answer(responder, makeQuery("laptop-3f2a.quazzar.mesh", .mx)))
        #expect(mx.responseCode == .noError && mx.answers.isEmpty && mx.authorities.count == 1)
    }

    @Test func emptyNonTerminalIsNoData() throws {
        let reply = try #require(try answer(responder, makeQuery("svc.quazzar.mesh", .a)))
        #expect(reply.responseCode == .noError)
        #expect(reply.answers.isEmpty)
        #expect(try answer(responder, makeQuery("api.svc.quazzar.mesh", .a))?.answers.count == 1)
    }

    @Test func apexAnswersSOAAndNS() throws {
        let soa = try #require(try answer(responder, makeQuery("quazzar.mesh", .soa)))
        #expect(soa.responseCode == .noError && soa.header.isAuthoritative)
        #expect(soa.answers.count == 1 && soa.answers[0].type == .soa)
        let ns = try #require(try answer(responder, makeQuery("QUAZZAR.mesh", .ns)))
        #expect(ns.answers.map(\.data) == [.ns(try DNSName("ns.quazzar.mesh"))])
        #expect(ns.additionals.map(\.data) == [.a(IPv4Address(100, 64, 0, 1))], "glue for the name server")
        let apexA = try #require(try answer(responder, makeQuery("quazzar.mesh", .a)))
        #expect(apexA.responseCode == .noError && apexA.answers.isEmpty && apexA.authorities.count == 1)
        // The configured name-server address resolves too.
        #expect(try answer(responder, makeQuery("ns.quazzar.mesh", .a))?.answers.count == 1)
    }

    @Test func outsideZoneIsRefusedOrForwarded() throws {
        let reply = try #require(try answer(responder, makeQuery("example.com", .a)))
        #expect(reply.responseCode == .refused)
        #expect(!reply.header.isAuthoritative)
        #expect(reply.questions.count == 1)
        let forwarding = MeshDNSResponder(zone: zone, forwardsOutsideZone: true)
        #expect(forwarding.respond(to: try makeQuery("example.com", .a), transport: .udp) == .forward)
        // In-zone names are still answered locally, with RA set.
        let local = try #require(try answer(forwarding, makeQuery("printer.quazzar.mesh", .a)))
        #expect(local.header.recursionAvailable && local.answers.count == 1)
    }

    @Test func malformedQueryWithHeaderIsFormErr() throws {
        var query = try makeQuery("printer.quazzar.mesh", .a, id: 4242)
        query.removeLast(3)
        let reply = try #require(try answer(responder, query))
        #expect(reply.responseCode == .formatError)
        #expect(reply.header.id == 4242)
        #expect(reply.questions.isEmpty)
    }

    @Test func questionCountOtherThanOneIsFormErr() throws {
        let name = try DNSName("printer.quazzar.mesh")
        let two = DNSMessage(header: DNSHeader(id: 5), questions: [DNSQuestion(name: name, type: .a),
                                                                    DNSQuestion(name: name, type: .aaaa)])
        #expect(try answer(responder, two.serialized())?.responseCode == .formatError)
        let none = DNSMessage(header: DNSHeader(id: 6))
        #expect(try answer(responder, none.serialized())?.responseCode == .formatError)
    }

    @Test func otherOpcodesAreNotImp() throws {
        var query = try makeQuery("printer.quazzar.mesh", .a)
        query[2] = (query[2] & 0x87) | (DNSOpcode.status.rawValue << 3)
        let reply = try #require(try answer(responder, query))
        #expect(reply.responseCode == .notImplemented)
        #expect(reply.header.opcode == .status)
        // NOTIFY with a body we cannot parse: still NOTIMP, not FORMERR.
        var garbled = query
        garbled[2] = (garbled[2] & 0x87) | (DNSOpcode.notify.rawValue << 3)
        garbled.removeLast(2)
        #expect(try answer(responder, garbled)?.responseCode == .notImplemented)
    }

    @Test func garbageAndResponsesAreDropped() throws {
        #expect(responder.respond(to: [], transport: .udp) == .drop)
        #expect(responder.respond(to: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], transport: .udp) == .drop)
        var response = try makeQuery("printer.quazzar.mesh", .a)
        response[2] |= 0x80
        #expect(responder.respond(to: response, transport: .udp) == .drop)
        #expect(responder.respond(to: response, transport: .tcp) == .drop)
    }

    @Test func ednsIsEchoedWithOurPayloadSize() throws {
        let query = try makeQuery("printer.quazzar.mesh", .a, edns: DNSEDNS(udpPayloadSize: 4096, dnssecOK: true))
        let reply = try #require(try answer(responder, query))
        let edns = try #require(reply.edns)
        #expect(edns.udpPayloadSize == 1232)
        #expect(edns.version == 0 && edns.dnssecOK)
        #expect(reply.answers.count == 1)
    }

    @Test func unknownEDNSVersionIsBadVers() throws {
        let query = try makeQuery("printer.quazzar.mesh", .a, edns: DNSEDNS(udpPayloadSize: 1232, version: 1))
        let reply = try #require(try answer(responder, query))
        #expect(reply.responseCode == .badVersion)
        #expect(reply.header.rcodeLow == 0)
        #expect(reply.edns?.version == 0)
        #expect(reply.answers.isEmpty)
    }

    @Test func otherClassesAndTransfersAreRefused() throws {
        #expect(try answer(responder, makeQuery("printer.quazzar.mesh", .a, recordClass: .chaos))?.responseCode == .refused)
        #expect(try answer(responder, makeQuery("printer.quazzar.mesh", .a, recordClass: .any))?.answers.count == 1)
        #expect(try answer(responder, makeQuery("quazzar.mesh", .axfr))?.responseCode == .refused)
    }

    @Test func bigAnswersAreTruncatedOverUDPOnly() throws {
        let addresses = (1...120).map { IPAddress.v6(IPv6Address(high: 0xfd7a_115c_a1e0_0000, low: UInt64($0))) }
        zone.upsert(MeshDNSRecord(name: "big", addresses: addresses), revision: 18)
        let plain = try #require(try answer(responder, makeQuery("big.quazzar.mesh", .aaaa)))
        #expect(plain.header.isTruncated && plain.answers.isEmpty)

        // EDNS raises the limit to min(client, 1232): 120 AAAA records (28 bytes each) still do not fit.
        let edns = try #require(try answer(responder, makeQuery("big.quazzar.mesh", .aaaa,
                                                              edns: DNSEDNS(udpPayloadSize: 65000))))
        #expect(edns.header.isTruncated && edns.edns != nil)

        zone.upsert(MeshDNSRecord(name: "big", addresses: Array(addresses.prefix(30))), revision: 19)
        let fits = try #require(try answer(responder, makeQuery("big.quazzar.mesh", .aaaa,
                                                              edns: DNSEDNS(udpPayloadSize: 4096))))
        #expect(!fits.header.isTruncated && fits.answers.count == 30)
        let small = try #require(try answer(responder, makeQuery("big.quazzar.mesh", .aaaa)))
        #expect(small.header.isTruncated, "30 AAAA records exceed 512 bytes without EDNS")

        let tcp = try #require(try answer(responder, makeQuery("big.quazzar.mesh", .aaaa), transport: .tcp))
        #expect(!tcp.header.isTruncated && tcp.answers.count == 30)
    }
}

@Suite(.timeLimit(.minutes(5))) struct ZoneTests {
    @Test func updatesAreImmediateAndAtomic() throws {
        let zone = try sampleZone()
        let responder = MeshDNSResponder(zone: zone)
        #expect(try answer(responder, makeQuery("printer.quazzar.mesh", .a))?.answers.count == 1)
        #expect(zone.remove(name: "printer", revision: 20))
        #expect(try answer(responder, makeQuery("printer.quazzar.mesh", .a))?.responseCode == .nameError)
        #expect(!zone.remove(name: "printer", revision: 21))
        // Renaming: the old name goes, the new one resolves, in one replace.
        zone.replace(records: [MeshDNSRecord(name: "laptop-renamed", addresses: [IPAddress("100.64.0.7")!])],
                     revision: 22)
        #expect(try answer(responder, makeQuery("laptop-3f2a.quazzar.mesh", .a))?.responseCode == .nameError)
        #expect(try answer(responder, makeQuery("laptop-renamed.quazzar.mesh", .a))?.answers.count == 1)
        #expect(try answer(responder, makeQuery("svc.quazzar.mesh", .a))?.responseCode == .nameError,
                "the empty non-terminal disappears with its last descendant")
        let snapshot = zone.snapshot()
        #expect(snapshot.revision == 22)
        #expect(snapshot.soa.serial == 22)
        #expect(snapshot.lastUpdate != nil)
    }

    @Test func concurrentReadersNeverSeeHalfAnUpdate() async throws {
        // Two record sets that share no name; every snapshot a reader takes must hold exactly one of them.
        let zone = MeshDNSZone(configuration: try MeshDNSZoneConfiguration(), logger: quietLogger)
        func set(_ prefix: String) -> [MeshDNSRecord] {
            (1...200).map { MeshDNSRecord(name: "\(prefix)\($0)", addresses: [.v4(IPv4Address(100, 64, 1, UInt8($0)))]) }
        }
        let setA = set("a"), setB = set("b")
        zone.replace(records: setA, revision: 1)
        let a1 = try DNSName("a1.quazzar.mesh"), b1 = try DNSName("b1.quazzar.mesh")
        let a200 = try DNSName("a200.quazzar.mesh"), b200 = try DNSName("b200.quazzar.mesh")
        let torn = try await withThrowingTaskGroup(of: Int.self) { group in
            group.addTask {
                for revision in 2...400 { zone.replace(records: revision % 2 == 0 ? setB : setA, revision: UInt32(revision)) }
                return 0
            }
            for _ in 0..<2 {
                group.addTask {
                    var bad = 0
                    for _ in 0..<5_000 {
                        let snapshot = zone.snapshot()
                        let hasA = snapshot.addresses(of: a1) != nil && snapshot.addresses(of: a200) != nil
                        let hasB = snapshot.addresses(of: b1) != nil && snapshot.addresses(of: b200) != nil
                        if hasA == hasB || snapshot.nameCount != 200 || (hasA != (snapshot.revision % 2 == 1)) { bad += 1 }
                    }
                    return bad
                }
            }
            return try await group.reduce(0, +)
        }
        #expect(torn == 0)
        #expect(zone.snapshot().revision == 400)
    }

    @Test func upsertReplacesAddresses() throws {
        let zone = try sampleZone()
        zone.upsert(MeshDNSRecord(name: "printer", addresses: [IPAddress("100.64.0.99")!]), revision: 30)
        #expect(zone.snapshot().addresses(of: try DNSName("PRINTER.quazzar.mesh")) == [IPAddress("100.64.0.99")!])
        #expect(zone.snapshot().revision == 30)
    }

    @Test func rejectsBadNamesButKeepsTheRest() throws {
        let zone = MeshDNSZone(configuration: try MeshDNSZoneConfiguration(), logger: quietLogger)
        let update = zone.replace(records: [
            MeshDNSRecord(name: "good", addresses: [IPAddress("100.64.0.3")!]),
            MeshDNSRecord(name: "bad name", addresses: [IPAddress("100.64.0.4")!]),
            MeshDNSRecord(name: "other.example.", addresses: [IPAddress("100.64.0.5")!]),
            MeshDNSRecord(name: "a..b", addresses: [IPAddress("100.64.0.6")!]),
            MeshDNSRecord(name: "GOOD", addresses: [IPAddress("fd7a::3")!]),
        ], revision: 1)
        #expect(update.rejected.map(\.name) == ["bad name", "other.example.", "a..b"])
        #expect(update.nameCount == 1)
        #expect(zone.snapshot().addresses(of: try DNSName("good.quazzar.mesh")) == [IPAddress("100.64.0.3")!, IPAddress("fd7a::3")!],
                "records of the same name merge")
        #expect(zone.snapshot().recordCount == 2)
    }

    /// The record count is kept as names come and go, not recounted: it must always equal a count of
    /// the zone's records (names replaced, merged, removed, removed twice, and the whole zone replaced).
    @Test func recordCountFollowsEveryChange() throws {
        let zone = MeshDNSZone(configuration: try MeshDNSZoneConfiguration(), logger: quietLogger)
        func recount() -> Int { zone.snapshot().records.reduce(0) { $0 + $1.addresses.count } }
        for i in 0..<400 {
            let name = "n\(i % 37)"
            switch i % 7 {
            case 0, 3: zone.remove(name: name, revision: UInt32(i))
            case 1: zone.upsert(MeshDNSRecord(name: name, addresses: [IPAddress("100.64.1.\(i % 250)")!]), revision: UInt32(i))
            case 5 where i % 100 == 5:
                zone.replace(records: (0..<(i % 9)).map { MeshDNSRecord(name: "r\($0)", addresses: [IPAddress("100.64.2.\($0)")!, IPAddress("fd7a::\($0)")!]) }
                             + [MeshDNSRecord(name: "r0", addresses: [IPAddress("100.64.3.1")!])], revision: UInt32(i))
            default:
                zone.upsert(MeshDNSRecord(name: name, addresses: [IPAddress("100.64.1.\(i % 250)")!, IPAddress("fd7a::\(i)")!]), revision: UInt32(i))
            }
            #expect(zone.snapshot().recordCount == recount(), "after step \(i)")
        }
        #expect(zone.snapshot().recordCount > 0)
    }

    @Test func customOriginAndTTLs() throws {
        let zone = try sampleZone { config in
            config.recordTTL = 3
            config.negativeTTL = 7
        }
        let responder = MeshDNSResponder(zone: zone)
        #expect(try answer(responder, makeQuery("printer.quazzar.mesh", .a))?.answers.first?.ttl == 3)
        #expect(try answer(responder, makeQuery("nope.quazzar.mesh", .a))?.authorities.first?.ttl == 7)

        let corp = MeshDNSZone(configuration: try MeshDNSZoneConfiguration(origin: "corp.internal"), logger: quietLogger)
        corp.replace(records: [MeshDNSRecord(name: "db", addresses: [IPAddress("10.1.0.5")!])], revision: 1)
        let corpResponder = MeshDNSResponder(zone: corp)
        #expect(try answer(corpResponder, makeQuery("db.corp.internal", .a))?.answers.count == 1)
        #expect(try answer(corpResponder, makeQuery("db.quazzar.mesh", .a))?.responseCode == .refused)
    }

    @Test func hostsFileExport() throws {
        let zone = try sampleZone()
        let text = zone.snapshot().hostsFile
        let lines = text.split(separator: "\n").filter { !$0.hasPrefix("#") }
        #expect(lines == [
            "100.64.0.10 api.svc.quazzar.mesh",
            "100.64.0.7 laptop-3f2a.quazzar.mesh",
            "fd7a:115c:a1e0::7 laptop-3f2a.quazzar.mesh",
            "100.64.0.2 node-a.quazzar.mesh",
            "fd7a:115c:a1e0::2 node-a.quazzar.mesh",
            "100.64.0.1 ns.quazzar.mesh",
            "100.64.0.9 printer.quazzar.mesh",
        ])
        #expect(text.hasPrefix("# Quazzar Mesh names for quazzar.mesh, serial 17."))

        let directory = "/tmp/mesh-dns-hosts-\(getpid())-\(UInt32.random(in: 0 ... .max))"
        #expect(mkdir(directory, 0o755) == 0)
        defer { rmdir(directory) }
        let path = directory + "/hosts"
        try zone.writeHostsFile(to: path)
        defer { unlink(path) }
        #expect(try readFile(path) == text)
        zone.remove(name: "printer", revision: 18)
        try zone.writeHostsFile(to: path)
        let after = try readFile(path)
        #expect(!after.contains("printer"))
        #expect(after.contains("serial 18"))
        // No temporary file is left behind.
        let entries = try listDirectory(directory)
        #expect(entries == ["hosts"])
        #expect(throws: MeshDNSHostsFileError.self) { try zone.writeHostsFile(to: "/nonexistent-dir/hosts") }
    }
}

struct TestIOError: Error {}

func readFile(_ path: String) throws -> String {
    guard let file = fopen(path, "r") else { throw TestIOError() }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = fread(&chunk, 1, chunk.count, file)
        if n == 0 { break }
        bytes += chunk[0..<n]
    }
    return String(decoding: bytes, as: UTF8.self)
}

func listDirectory(_ path: String) throws -> [String] {
    guard let dir = opendir(path) else { throw TestIOError() }
    defer { closedir(dir) }
    var names: [String] = []
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        if name != "." && name != ".." { names.append(name) }
    }
    return names.sorted()
}
