import Foundation
import MeshBus
import MeshCore
import MeshProto
import Testing

/// The error catalogue: every case travels through its protobuf form and back unchanged, and maps
/// to one bus code.
@Suite(.timeLimit(.minutes(2))) struct MeshErrorTests {
    static let all: [MeshError] = [
        .invalidArgument(field: "label", message: "label must not be empty"), .notFound("no such device"),
        .alreadyExists("exists"), .conflict("conflict"), .permissionDenied("denied"), .unauthenticated("who?"),
        .quotaExceeded(plan: .pro, cap: 20), .rateLimited(retryAfterSeconds: 42), .poolExhausted("full"),
        .unavailable("down"), .deadlineExceeded("slow"), .failedPrecondition("not now"), .internal("boom"),
    ]

    @Test func everyCaseRoundTripsThroughProtobuf() throws {
        #expect(Set(Self.all.map(\.code)).count == Self.all.count, "one case per code")
        for e in Self.all {
            let bytes: [UInt8] = try e.proto.serializedBytes()
            let back = MeshError(proto: try Mesh_V1_Error(serializedBytes: bytes))
            #expect(back == e, "\(e)")
        }
    }

    @Test func busCodesAreTheDocumentedOnes() {
        let expected: [Mesh_V1_ErrorCode: Int] = [
            .invalidArgument: 400, .unauthenticated: 401, .permissionDenied: 403, .quotaExceeded: 403, .notFound: 404,
            .alreadyExists: 409, .conflict: 409, .poolExhausted: 409, .failedPrecondition: 409, .rateLimited: 429,
            .internal: 500, .unavailable: 503, .deadlineExceeded: 504,
        ]
        for e in Self.all { #expect(e.busCode == expected[e.code], "\(e.code)") }
    }

    /// A service error arrives as ADR-32 headers plus the protobuf body; the caller gets the domain
    /// error back, and transport failures become unavailable / deadline exceeded.
    @Test func busErrorsMapBackToTheDomainError() throws {
        for e in Self.all {
            let wire = BusError.service(code: e.busCode, description: e.message, body: e.serviceErrorBody)
            #expect(MeshError(busError: wire) == e)
        }
        #expect(MeshError(busError: BusError.service(code: 503, description: "x", body: [])).code == .unavailable)
        #expect(MeshError(busError: BusError.service(code: 504, description: "x", body: [])).code == .deadlineExceeded)
        #expect(MeshError(busError: BusError.service(code: 500, description: "x", body: [0xff, 0xff])).code == .internal)
        #expect(MeshError(busError: BusError.noResponders(subject: "a.b")).code == .unavailable)
        #expect(MeshError(busError: BusError.timeout(subject: "a.b")).code == .deadlineExceeded)
        #expect(MeshError(busError: CancellationError()).code == .unavailable)
        var unknown = Mesh_V1_Error()
        unknown.code = .unspecified
        #expect(MeshError(proto: unknown).code == .internal)
    }
}

/// The registry of subjects: well formed, one service per subject, patterns that match what the
/// subject builders produce.
@Suite(.timeLimit(.minutes(2))) struct SubjectRegistryTests {
    @Test func everyServedSubjectIsAValidPatternOfAKnownService() throws {
        let services: Set<String> = [MeshServiceName.allocator, MeshServiceName.provision, MeshServiceName.fanout, MeshServiceName.nodeApplier]
        #expect(Set(MeshSubjects.served.map(\.subject)).count == MeshSubjects.served.count, "a subject listed twice")
        for s in MeshSubjects.served {
            try Subjects.validate(s.subject, wildcards: true)
            #expect(services.contains(s.service), "\(s)")
            #expect(s.subject.hasPrefix("mesh.v1."), "\(s)")
            #expect(!s.subject.contains(">"), "\(s): a request subject names its tokens")
        }
        // Every service that answers requests is in the list; the Gateway answers none on the bus.
        #expect(Set(MeshSubjects.served.map(\.service)) == services)
    }

    @Test func patternsMatchTheBuiltSubjects() {
        let t = UUID().uuidString.lowercased(), n = UUID().uuidString.lowercased()
        let built = [MeshSubjects.handshakeReport(tenant: t, node: n), MeshSubjects.sync(tenant: t, node: n), MeshSubjects.revision(tenant: t),
                     MeshSubjects.nodeState(n), MeshSubjects.nodePeers(n), MeshSubjects.nodeRefresh(n)]
        for subject in built {
            let owners = MeshSubjects.served.filter { $0.matches(subject) }
            #expect(owners.count == 1, "\(subject) matched by \(owners)")
        }
        // The peer stream is published, not served.
        #expect(!MeshSubjects.served.contains { $0.matches(MeshSubjects.peersUpdated(tenant: t)) })
        #expect(!ServedSubject(MeshServiceName.fanout, MeshSubjects.syncWildcard).matches("mesh.v1.fanout.sync.\(t)"))
    }
}

/// Labels and slugs (docs/api.md): trimmed, validated, transliterated, unique suffixes within 63.
@Suite(.timeLimit(.minutes(2))) struct SlugTests {
    @Test func labelsAreTrimmedAndControlCharactersRefused() throws {
        #expect(try Slug.validateLabel("  Zoë's iPhone ") == "Zoë's iPhone")
        for bad in ["", "   ", String(repeating: "a", count: 64), "bad\u{0}name", "bell\u{7}", "rtl\u{202E}", "line\u{2028}sep"] {
            #expect(throws: MeshError.self) { try Slug.validateLabel(bad) }
        }
        #expect(try Slug.validateLabel(String(repeating: "é", count: 63)).count == 63)
    }

    @Test func slugsAreDNSLabels() {
        #expect(Slug.make("Zoë's iPhone") == "zoes-iphone")
        #expect(Slug.make("Иван") == "ivan")
        #expect(Slug.make("🚀🚀", fallback: "laptop") == "laptop")
        #expect(Slug.make("--a  b--") == "a-b")
        let long = Slug.make(String(repeating: "x", count: 80))
        #expect(long.count == 63)
        #expect(Slug.withSuffix(long, 2).count == 63 && Slug.withSuffix(long, 2).hasSuffix("-2"))
        #expect(Slug.withSuffix("printer", 1) == "printer")
        for label in ["Zoë's iPhone", "a_b.c", "ÅÄÖ", "東京", "x--y"] {
            let s = Slug.make(label)
            #expect(s.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" }, "\(label) → \(s)")
            #expect(!s.hasPrefix("-") && !s.hasSuffix("-") && !s.isEmpty && s.count <= 63, "\(label) → \(s)")
        }
    }
}
