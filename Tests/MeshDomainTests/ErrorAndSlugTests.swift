import Foundation
import MeshDomain
import MeshProto
import Testing

/// One value of every error case.
enum MeshErrorCases {
    static let all: [MeshError] = [
        .invalidArgument(field: "label", message: "label must not be empty"), .notFound("no such device"),
        .alreadyExists("exists"), .conflict("conflict"), .permissionDenied("denied"), .unauthenticated("who?"),
        .quotaExceeded(plan: .pro, cap: 20), .rateLimited(retryAfterSeconds: 42), .poolExhausted("full"),
        .unavailable("down"), .deadlineExceeded("slow"), .failedPrecondition("not now"), .internal("boom"),
    ]
}

/// The error catalogue: every case travels through its protobuf form and back unchanged, and maps
/// to one bus code.
@Suite(.timeLimit(.minutes(2))) struct MeshErrorTests {
    @Test func everyCaseRoundTripsThroughProtobuf() throws {
        let all = MeshErrorCases.all
        #expect(Set(all.map(\.code)).count == all.count, "one case per code")
        for e in all {
            let bytes: [UInt8] = try e.proto.serializedBytes()
            let back = MeshError(proto: try Mesh_V1_Error(serializedBytes: bytes))
            #expect(back == e, "\(e)")
        }
        var unknown = Mesh_V1_Error()
        unknown.code = .unspecified
        #expect(MeshError(proto: unknown).code == .internal)
    }

    @Test func busCodesAreTheDocumentedOnes() {
        let expected: [Mesh_V1_ErrorCode: Int] = [
            .invalidArgument: 400, .unauthenticated: 401, .permissionDenied: 403, .quotaExceeded: 403, .notFound: 404,
            .alreadyExists: 409, .conflict: 409, .poolExhausted: 409, .failedPrecondition: 409, .rateLimited: 429,
            .internal: 500, .unavailable: 503, .deadlineExceeded: 504,
        ]
        for e in MeshErrorCases.all { #expect(e.busCode == expected[e.code], "\(e.code)") }
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
        // The length is counted as sent, in code points (the API schema's maxLength): a space past
        // 63 is refused though trimming would fit, and so are 40 decomposed "é" (80 code points).
        #expect(throws: MeshError.invalidArgument(field: "label", message: "label must be at most 63 characters")) {
            try Slug.validateLabel(" " + String(repeating: "a", count: 63))
        }
        #expect(throws: MeshError.self) { try Slug.validateLabel(String(repeating: "e\u{301}", count: 40)) }
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
