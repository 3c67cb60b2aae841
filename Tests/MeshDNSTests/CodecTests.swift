import MeshDNS
import MeshNet
import NIOCore
import Testing

/// A query message for `name`/`type`, optionally with EDNS0.
func makeQuery(_ name: String, _ type: DNSRecordType, id: UInt16 = 0x1234, edns: DNSEDNS? = nil,
               recordClass: DNSClass = .in) throws -> [UInt8] {
    DNSMessage(header: DNSHeader(id: id, recursionDesired: true),
               questions: [DNSQuestion(name: try DNSName(name), type: type, recordClass: recordClass)],
               edns: edns).serialized()
}

@Suite(.timeLimit(.minutes(5))) struct DNSNameTests {
    @Test func parsesAndPrints() throws {
        let name = try DNSName("Laptop-3F2A.quazzar.mesh")
        #expect(name.wire == [11] + Array("Laptop-3F2A".utf8) + [7] + Array("quazzar".utf8) + [4] + Array("mesh".utf8) + [0])
        #expect(name.description == "Laptop-3F2A.quazzar.mesh.")
        #expect(name.withoutTrailingDot == "Laptop-3F2A.quazzar.mesh")
        #expect(name.labelCount == 3)
        #expect(try DNSName("quazzar.mesh.") == DNSName("QUAZZAR.MESH"))
        #expect(DNSName.root.description == ".")
        #expect(try DNSName(".").isRoot)
    }

    @Test func caseInsensitiveEqualityAndHash() throws {
        let a = try DNSName("Host.Quazzar.Mesh"), b = try DNSName("host.quazzar.mesh")
        #expect(a == b)
        #expect(a.hashValue == b.hashValue)
        #expect(Set([a, b]).count == 1)
        #expect(try DNSName("host.quazzar.mesh") != DNSName("host2.quazzar.mesh"))
    }

    @Test func subdomains() throws {
        let zone = try DNSName("quazzar.mesh")
        #expect(try DNSName("a.quazzar.mesh").isSubdomain(of: zone))
        #expect(try DNSName("A.B.QUAZZAR.MESH").isSubdomain(of: zone))
        #expect(zone.isSubdomain(of: zone))
        #expect(try !DNSName("xquazzar.mesh").isSubdomain(of: zone))
        #expect(try !DNSName("example.com").isSubdomain(of: zone))
        #expect(try DNSName("example.com").isSubdomain(of: .root))
    }

    @Test func escapes() throws {
        let name = try DNSName("a\\.b.c\\032d.e")
        #expect(name.labels.map { String(decoding: $0, as: UTF8.self) } == ["a.b", "c d", "e"])
        #expect(name.description == "a\\.b.c\\032d.e.")
        #expect(try DNSName(name.description) == name)
        #expect(try DNSName("a\\\\.").labels == [Array("a\\".utf8)])
    }

    @Test func rejectsBadNames() throws {
        #expect(throws: DNSNameError.emptyLabel) { try DNSName("a..b") }
        #expect(throws: DNSNameError.emptyLabel) { try DNSName(".a") }
        #expect(throws: DNSNameError.labelTooLong) { try DNSName(String(repeating: "x", count: 64) + ".mesh") }
        #expect(throws: DNSNameError.nameTooLong) {
            try DNSName(Array(repeating: String(repeating: "x", count: 63), count: 4).joined(separator: "."))
        }
        #expect(throws: DNSNameError.badEscape) { try DNSName("a\\25") }
        #expect(throws: DNSNameError.badEscape) { try DNSName("a\\300") }
        // 63 + 63 + 63 + 61 with four length bytes and the root is exactly 255 bytes: allowed.
        let longest = [63, 63, 63, 61].map { String(repeating: "y", count: $0) }.joined(separator: ".")
        #expect(try DNSName(longest).wire.count == 255)
        #expect(DNSName(wire: [3, 97, 98]) == nil)
        #expect(DNSName(wire: [64] + Array(repeating: 97, count: 64) + [0]) == nil)
    }
}

@Suite(.timeLimit(.minutes(5))) struct DNSCodecTests {
    static let zoneName = try! DNSName("quazzar.mesh")

    static func sampleResponse() throws -> DNSMessage {
        let host = try DNSName("Laptop.Quazzar.Mesh")
        let soa = DNSSOA(mname: try DNSName("ns.quazzar.mesh"), rname: try DNSName("hostmaster.quazzar.mesh"),
                         serial: 42, refresh: 3600, retry: 600, expire: 86400, minimum: 10)
        return DNSMessage(
            header: DNSHeader(id: 0xbeef, isResponse: true, isAuthoritative: true, recursionDesired: true),
            questions: [DNSQuestion(name: host, type: .any)],
            answers: [
                DNSResourceRecord(name: host, ttl: 10, data: .a(IPv4Address(100, 64, 0, 7))),
                DNSResourceRecord(name: host, ttl: 10, data: .aaaa(IPv6Address("fd7a:115c:a1e0::7")!)),
                DNSResourceRecord(name: host, ttl: 10, data: .cname(try DNSName("alias.quazzar.mesh"))),
                DNSResourceRecord(name: host, type: .txt, ttl: 5, data: .raw([3, 0x61, 0x62, 0x63])),
            ],
            authorities: [
                DNSResourceRecord(name: zoneName, ttl: 10, data: .soa(soa)),
                DNSResourceRecord(name: zoneName, ttl: 10, data: .ns(try DNSName("ns.quazzar.mesh"))),
            ],
            additionals: [DNSResourceRecord(name: try DNSName("ns.quazzar.mesh"), ttl: 10,
                                            data: .ptr(try DNSName("x.in-addr.arpa")))],
            edns: DNSEDNS(udpPayloadSize: 1232, version: 0, dnssecOK: true,
                          options: [DNSEDNSOption(code: 10, data: [1, 2, 3, 4, 5, 6, 7, 8])]))
    }

    @Test func roundTrip() throws {
        let message = try Self.sampleResponse()
        let bytes = message.serialized()
        let parsed = try DNSMessage(parsing: bytes)
        #expect(parsed == message)
        // Case survives the round trip even though compression matched case-insensitively.
        #expect(parsed.questions[0].name.description == "Laptop.Quazzar.Mesh.")
        #expect(parsed.serialized() == bytes)
    }

    @Test func emitsCompressionPointers() throws {
        let message = try Self.sampleResponse()
        let bytes = message.serialized()
        // Answer owners repeat the question name at offset 12: each must be the two-byte pointer C0 0C.
        let pointerCount = zip(bytes, bytes.dropFirst()).filter { $0 == 0xc0 && $1 == 0x0c }.count
        #expect(pointerCount >= 4)
        // Uncompressed, every name would be spelled out; compression must save a lot.
        let uncompressedNames = message.answers.count * message.questions[0].name.wire.count
        #expect(bytes.count < 12 + uncompressedNames + 200)
        // The zone apex in the authority section points into the question name ("Quazzar.Mesh" at 12+7).
        let soaOwnerPointer: [UInt8] = [0xc0, 12 + 7]
        #expect(bytes.indices.dropLast().contains { bytes[$0] == soaOwnerPointer[0] && bytes[$0 + 1] == soaOwnerPointer[1] })
    }

    @Test func parsesForeignCompression() throws {
        // Hand-built: question "a.example." then an answer whose owner is "b" + pointer to "example" (offset 14).
        var bytes: [UInt8] = [0, 1, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]
        bytes += [1, 0x61, 7] + Array("example".utf8) + [0, 0, 1, 0, 1]
        bytes += [1, 0x62, 0xc0, 14, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 1]
        let message = try DNSMessage(parsing: bytes)
        #expect(message.answers[0].name == (try DNSName("b.example")))
        #expect(message.answers[0].data == .a(IPv4Address(10, 0, 0, 1)))
        // A chain: pointer to a name that itself ends in a pointer.
        bytes[7] = 2
        bytes += [1, 0x63, 0xc0, UInt8(12 + 11 + 4), 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 2]
        let chained = try DNSMessage(parsing: bytes)
        #expect(chained.answers[1].name == (try DNSName("c.b.example")))
    }

    /// A message with one question whose name bytes are `nameBytes` (header counts fixed up).
    static func questionMessage(_ nameBytes: [UInt8]) -> [UInt8] {
        [0, 9, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0] + nameBytes + [0, 1, 0, 1]
    }

    @Test func rejectsPointerToItself() {
        #expect(throws: DNSParseError.badPointer(offset: 12)) {
            try DNSMessage(parsing: Self.questionMessage([0xc0, 12]))
        }
    }

    @Test func rejectsPointerLoop() {
        // "a" then a pointer back to the start of the same name: a two-step loop.
        #expect(throws: DNSParseError.badPointer(offset: 14)) {
            try DNSMessage(parsing: Self.questionMessage([1, 0x61, 0xc0, 12]))
        }
        // Two names pointing at each other: the second question's pointer targets the first, whose
        // pointer targets the second.
        var bytes: [UInt8] = [0, 9, 0x01, 0x00, 0, 2, 0, 0, 0, 0, 0, 0]
        bytes += [1, 0x61, 0xc0, 20, 0, 1, 0, 1]  // offset 12: "a" -> 20 (forward)
        bytes += [1, 0x62, 0xc0, 12, 0, 1, 0, 1]  // offset 20: "b" -> 12
        #expect(throws: DNSParseError.self) { try DNSMessage(parsing: bytes) }
    }

    @Test func rejectsForwardPointer() {
        #expect(throws: DNSParseError.badPointer(offset: 12)) {
            try DNSMessage(parsing: Self.questionMessage([0xc0, 16, 0, 0, 0, 1, 0]))
        }
    }

    @Test func rejectsOutOfBoundsPointerAndLabels() {
        // A pointer past the end of the message, which is also forward.
        #expect(throws: DNSParseError.self) { try DNSMessage(parsing: Self.questionMessage([0xff, 0xff])) }
        // A pointer whose second byte is missing.
        #expect(throws: DNSParseError.truncated(offset: 12)) {
            try DNSMessage(parsing: [0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0])
        }
        // A label that runs past the end.
        #expect(throws: DNSParseError.truncated(offset: 12)) {
            try DNSMessage(parsing: [0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0x61, 0x62])
        }
    }

    @Test func rejectsLongLabelsAndNames() {
        // Length bytes 64 and 128 carry the reserved 01 and 10 label types.
        #expect(throws: DNSParseError.badLabelType(offset: 12)) {
            try DNSMessage(parsing: Self.questionMessage([64] + Array(repeating: 0x61, count: 64) + [0]))
        }
        #expect(throws: DNSParseError.badLabelType(offset: 12)) {
            try DNSMessage(parsing: Self.questionMessage([0x80, 0]))
        }
        // Five 63-byte labels are 320 bytes: over the 255-byte limit.
        let label: [UInt8] = [63] + Array(repeating: 0x61, count: 63)
        #expect(throws: DNSParseError.nameTooLong(offset: 12 + 64 * 3)) {
            try DNSMessage(parsing: Self.questionMessage(label + label + label + label + label + [0]))
        }
        // The same limit applies to a name assembled through pointers: 4 labels + pointer to 3 more.
        var bytes: [UInt8] = [0, 9, 0x01, 0x00, 0, 2, 0, 0, 0, 0, 0, 0]
        bytes += label + label + label + [0, 0, 1, 0, 1]
        bytes += label + label + [0xc0, 12, 0, 1, 0, 1]
        #expect(throws: DNSParseError.self) { try DNSMessage(parsing: bytes) }
    }

    @Test func rejectsEveryTruncationOfAValidMessage() throws {
        let bytes = try Self.sampleResponse().serialized()
        for length in 0..<bytes.count {
            #expect(throws: DNSParseError.self) { try DNSMessage(parsing: Array(bytes[0..<length])) }
        }
        #expect(throws: DNSParseError.trailingBytes(offset: bytes.count)) { try DNSMessage(parsing: bytes + [0]) }
    }

    @Test func rejectsBadRecordData() throws {
        // An A record with a 3-byte RDATA.
        var bytes: [UInt8] = [0, 1, 0x81, 0x80, 0, 0, 0, 1, 0, 0, 0, 0]
        bytes += [1, 0x61, 0, 0, 1, 0, 1, 0, 0, 0, 60, 0, 3, 10, 0, 0]
        #expect(throws: DNSParseError.badRecordData(offset: 12 + 13)) { try DNSMessage(parsing: bytes) }
        // Counts that promise more records than the bytes could possibly hold.
        #expect(throws: DNSParseError.truncated(offset: 12)) {
            try DNSMessage(parsing: [0, 1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0])
        }
    }

    @Test func edns() throws {
        let query = try makeQuery("a.quazzar.mesh", .a, edns: DNSEDNS(udpPayloadSize: 4096, version: 0, dnssecOK: true))
        let parsed = try DNSMessage(parsing: query)
        #expect(parsed.edns == DNSEDNS(udpPayloadSize: 4096, version: 0, dnssecOK: true))
        #expect(parsed.additionals.isEmpty)
        // OPT layout: root name, type 41, class = payload size, TTL = ext-rcode|version|DO.
        #expect(Array(query.suffix(11)) == [0, 0, 41, 0x10, 0x00, 0, 0, 0x80, 0, 0, 0])

        // The extended response code lives in the OPT TTL's high byte.
        var reply = DNSMessage(header: DNSHeader(id: 1, isResponse: true), edns: DNSEDNS())
        reply.responseCode = .badVersion
        #expect(reply.header.rcodeLow == 0)
        #expect(reply.edns?.extendedRCode == 1)
        let reparsed = try DNSMessage(parsing: reply.serialized())
        #expect(reparsed.responseCode == .badVersion)
    }

    @Test func rejectsDuplicateOrMisplacedOPT() throws {
        let one = try makeQuery("a.quazzar.mesh", .a, edns: DNSEDNS())
        var two = one + Array(one.suffix(11))
        two[11] = 2
        #expect(throws: DNSParseError.badOPT(offset: one.count)) { try DNSMessage(parsing: two) }
        // The same OPT bytes counted in the answer section.
        var misplaced = one
        misplaced[7] = 1
        misplaced[11] = 0
        #expect(throws: DNSParseError.badOPT(offset: one.count - 11)) { try DNSMessage(parsing: misplaced) }
        // An OPT record not owned by the root.
        var named = Array(one.dropLast(11)) + [1, 0x61, 0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]
        named[11] = 1
        #expect(throws: DNSParseError.badOPT(offset: one.count - 11)) { try DNSMessage(parsing: named) }
    }

    @Test func truncatesToLimitWithTC() throws {
        let host = try DNSName("many.quazzar.mesh")
        let answers = (0..<100).map { DNSResourceRecord(name: host, ttl: 10, data: .a(IPv4Address(10, 0, 0, UInt8($0)))) }
        let message = DNSMessage(header: DNSHeader(id: 7, isResponse: true),
                                 questions: [DNSQuestion(name: host, type: .a)], answers: answers,
                                 edns: DNSEDNS(udpPayloadSize: 1232))
        let full = message.serialized()
        #expect(full.count > 512)
        #expect(try DNSMessage(parsing: full).answers.count == 100)

        let cut = message.serialized(maxSize: 512)
        #expect(cut.count <= 512)
        let parsed = try DNSMessage(parsing: cut)
        #expect(parsed.header.isTruncated)
        #expect(parsed.answers.isEmpty)
        #expect(parsed.questions == message.questions)
        #expect(parsed.edns != nil, "the OPT record survives truncation")

        // Only the additional section overflowing drops it without TC.
        var glueHeavy = DNSMessage(header: DNSHeader(id: 8, isResponse: true),
                                   questions: [DNSQuestion(name: host, type: .ns)],
                                   answers: [DNSResourceRecord(name: host, ttl: 10, data: .ns(host))],
                                   additionals: answers)
        let glueCut = try DNSMessage(parsing: glueHeavy.serialized(maxSize: 512))
        #expect(!glueCut.header.isTruncated)
        #expect(glueCut.answers.count == 1)
        #expect(glueCut.additionals.isEmpty)
        glueHeavy.additionals = []
        #expect(try DNSMessage(parsing: glueHeavy.serialized(maxSize: 512)) == glueHeavy)
    }

    @Test func headerFlagsRoundTrip() {
        // Every flag combination except the reserved Z bit (0x0040) must survive decode and encode.
        let mismatches = (0...0xffff).filter { $0 & 0x0040 == 0 && DNSHeader(id: 1, flags: UInt16($0)).flags != UInt16($0) }
        #expect(mismatches.isEmpty)
    }
}
