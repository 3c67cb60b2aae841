import Foundation
import MeshProto
import MeshTestSupport
import ProtoInterop
import SwiftProtobuf
import Testing

/// The seed of this run's random messages: `PROTO_INTEROP_SEED` to replay a failure, else random.
/// Every failure message names it.
let runSeed: UInt64 = ProcessInfo.processInfo.environment["PROTO_INTEROP_SEED"].flatMap { UInt64($0) }
    ?? UInt64.random(in: 1...UInt64.max)

/// Random messages built and checked per message type in the Swift → C direction.
let roundsPerType = 8

/// swift-protobuf's JSON, with .proto field names so it lines up with protobuf-c's description.
func swiftJSON(_ message: some SwiftProtobuf.Message) throws -> String {
    var options = JSONEncodingOptions()
    options.preserveProtoFieldNames = true
    return try message.jsonString(options: options)
}

/// JSON text parsed and printed again with sorted keys, one value per line: equal values give
/// equal text, whatever key order, spacing or string escaping either side used.
func canonical(_ json: String) throws -> String {
    let object = try JSONSerialization.jsonObject(with: Data(json.utf8), options: [.fragmentsAllowed])
    let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted])
    return String(decoding: data, as: UTF8.self)
}

/// The first line where two canonical texts differ, for a readable failure.
func firstDifference(_ a: String, _ b: String) -> String {
    let left = a.split(separator: "\n", omittingEmptySubsequences: false)
    let right = b.split(separator: "\n", omittingEmptySubsequences: false)
    for (index, (l, r)) in zip(left, right).enumerated() where l != r {
        return "line \(index + 1): \(l.trimmingCharacters(in: .whitespaces)) vs \(r.trimmingCharacters(in: .whitespaces))"
    }
    return "one side has \(abs(left.count - right.count)) more line(s)"
}

/// For each message type, the numbers of all its fields that Swift can set at once: what the random
/// builder sets on a fresh message of that type. "Every field non-default" is checked against this,
/// and `CToSwiftTests` checks it in turn against the fields of C's samples, so a field the builder
/// skipped cannot hide.
let allFieldNumbers: Result<[String: Set<Int>], MessageCatalog.Failure> = MessageCatalog.shared.flatMap { catalog in
    var result: [String: Set<Int>] = [:]
    for (name, entry) in catalog {
        do {
            result[name] = try fieldsSetByBuilder(entry.type)
        } catch {
            return .failure(MessageCatalog.Failure(description: "\(name): \(error)"))
        }
    }
    return .success(result)
}

private func fieldsSetByBuilder<M: SwiftProtobuf.Message>(_ type: M.Type) throws -> Set<Int> {
    let message = try RandomMessageBuilder.build(M.self, seed: 1)
    return try FieldCollector.collect(message).instances[0].setFields
}

@Suite(.timeLimit(.minutes(5))) struct CatalogTests {
    @Test func swiftCatalogLoads() throws {
        let catalog = try MessageCatalog.shared.get()
        #expect(catalog.count > 50, "found only \(catalog.count) message types under Sources/MeshProto")
        #expect(catalog["mesh.v1.AllocateRequest"]?.swiftName == "Mesh_V1_AllocateRequest")
    }

    /// Swift and protobuf-c generated code describe the same set of messages; fails when either side
    /// was not regenerated after a .proto change.
    @Test func swiftAndCKnowTheSameMessages() throws {
        let swift = Set(try MessageCatalog.shared.get().keys)
        let c = Set(ProtoC.messageNames)
        #expect(ProtoC.messageNames.count == c.count, "protobuf-c's table lists a message twice")
        #expect(swift.subtracting(c).sorted() == [], "message types in Swift but not in protobuf-c's table")
        #expect(c.subtracting(swift).sorted() == [], "message types in protobuf-c's table but not in Swift")
    }

    @Test func builderSetsFieldsOfEveryMessage() throws {
        let fields = try allFieldNumbers.get()
        #expect(fields["mesh.v1.Device"] == Set(1...21).union(40...46))
        #expect(fields["mesh.v1.NodeStateRequest"] == [])
    }
}

/// Swift builds and encodes; protobuf-c decodes and must read exactly what Swift meant.
@Suite(.timeLimit(.minutes(5))) struct SwiftToCTests {
    @Test(arguments: MessageCatalog.fullNames)
    func cDecodesWhatSwiftEncodes(fullName: String) throws {
        let entry = try MessageCatalog.entry(fullName)
        for round in 0..<roundsPerType {
            try checkSwiftToC(entry.type, seed: runSeed &+ UInt64(round))
        }
    }

    private func checkSwiftToC<M: SwiftProtobuf.Message>(_ type: M.Type, seed: UInt64) throws {
        let context = "\(M.protoMessageName), seed \(seed) (PROTO_INTEROP_SEED=\(runSeed))"
        let message = try RandomMessageBuilder.build(M.self, seed: seed)

        // The message Swift built really has every field set, in every nested message.
        let expected = try allFieldNumbers.get()
        for instance in try FieldCollector.collect(message).instances {
            #expect(instance.setFields == expected[instance.typeName], "\(context): \(instance.path) not fully set")
        }

        let bytes: [UInt8] = try message.serializedBytes()
        let cView = try ProtoC.describe(fullName: M.protoMessageName, bytes: bytes)
        let swiftView = try swiftJSON(message)
        let (c, swift) = (try canonical(cView), try canonical(swiftView))
        #expect(c == swift, "\(context): protobuf-c read something else: \(firstDifference(c, swift))")
    }
}

/// protobuf-c builds and encodes; Swift decodes, must know every field, and what it encodes back
/// must read the same in C.
@Suite(.timeLimit(.minutes(5))) struct CToSwiftTests {
    @Test(arguments: MessageCatalog.fullNames)
    func swiftDecodesWhatCEncodes(fullName: String) throws {
        let entry = try MessageCatalog.entry(fullName)
        try checkCToSwift(entry.type)
    }

    private func checkCToSwift<M: SwiftProtobuf.Message>(_ type: M.Type) throws {
        let name = M.protoMessageName
        let cBytes = try ProtoC.sample(fullName: name)
        let decoded = try M(serializedBytes: cBytes)

        // Swift understood every field C wrote, at every depth.
        #expect(decoded.unknownFields.data.isEmpty, "\(name): Swift kept unknown fields of C's sample")
        let collected = try FieldCollector.collect(decoded)
        #expect(collected.unknownFields.isEmpty, "\(name): unknown fields in \(collected.unknownFields)")

        // C set every field, so Swift's decoded message has every field non-default, in every nested
        // message and every element. The expected sets come from Swift's random builder; comparing
        // for equality checks the builder too: a field it failed to fill shows up as "extra" here.
        let expected = try allFieldNumbers.get()
        for instance in collected.instances {
            let wanted = expected[instance.typeName] ?? []
            let missing = wanted.subtracting(instance.setFields)
            let extra = instance.setFields.subtracting(wanted)
            #expect(missing.isEmpty, "\(name): \(instance.path) lacks fields \(missing.sorted())")
            #expect(extra.isEmpty, "\(name): \(instance.path) has fields \(extra.sorted()) the random builder never sets")
        }

        // Same fields, seen from both sides.
        let cOfC = try ProtoC.describe(fullName: name, bytes: cBytes)
        let swiftView = try swiftJSON(decoded)
        let (c, swift) = (try canonical(cOfC), try canonical(swiftView))
        #expect(c == swift, "\(name): Swift decoded something else: \(firstDifference(c, swift))")

        // Swift's re-encoding reads in C exactly like C's own bytes.
        let reencoded: [UInt8] = try decoded.serializedBytes()
        let cOfSwift = try ProtoC.describe(fullName: name, bytes: reencoded)
        #expect(try canonical(cOfSwift) == c, "\(name): C reads Swift's re-encoding differently")
    }
}

/// The checks above can fail: each guard fires on input made to trip it.
@Suite(.timeLimit(.minutes(5))) struct HarnessSelfTests {
    /// Field 999, varint 1: a field no mesh.v1 message has.
    let strayField: [UInt8] = [0xB8, 0x3E, 0x01]

    @Test func cRejectsUnknownFields() throws {
        var lease = Mesh_V1_Lease()
        lease.ownerID = "device-1"
        let bytes: [UInt8] = try lease.serializedBytes() + strayField
        #expect {
            _ = try ProtoC.describe(fullName: "mesh.v1.Lease", bytes: bytes)
        } throws: { error in
            guard case ProtoCError.unknownFields(let reason) = error else { return false }
            return reason.contains("999")
        }
    }

    @Test func cRejectsUnknownFieldsInNestedMessages() throws {
        var inner = Mesh_V1_Lease()
        inner.ownerID = "device-1"
        let innerBytes: [UInt8] = try inner.serializedBytes() + strayField
        // AllocateResponse.lease is field 1, length-delimited.
        let outer: [UInt8] = [0x0A, UInt8(innerBytes.count)] + innerBytes
        #expect {
            _ = try ProtoC.describe(fullName: "mesh.v1.AllocateResponse", bytes: outer)
        } throws: { error in
            guard case ProtoCError.unknownFields(let reason) = error else { return false }
            return reason.contains("mesh.v1.AllocateResponse.lease")
        }
    }

    @Test func swiftUnknownFieldsAreNoticed() throws {
        var inner = Mesh_V1_Lease()
        inner.ownerID = "device-1"
        let innerBytes: [UInt8] = try inner.serializedBytes() + strayField
        let outer: [UInt8] = [0x0A, UInt8(innerBytes.count)] + innerBytes
        let decoded = try Mesh_V1_AllocateResponse(serializedBytes: outer)
        #expect(decoded.unknownFields.data.isEmpty, "the stray field is nested, not at the top")
        #expect(try FieldCollector.collect(decoded).unknownFields == ["mesh.v1.AllocateResponse.1": 3])
    }

    @Test func cRejectsTruncatedBytes() {
        // Field 1 says 5 bytes follow; one does.
        #expect {
            _ = try ProtoC.describe(fullName: "mesh.v1.Lease", bytes: [0x0A, 0x05, 0x61])
        } throws: { error in
            if case ProtoCError.decodeFailed = error { return true }
            return false
        }
    }

    @Test func unknownNamesAreRejected() {
        #expect(throws: ProtoCError.unknownMessage("no protobuf-c descriptor named \"mesh.v1.Nope\"")) {
            try ProtoC.describe(fullName: "mesh.v1.Nope", bytes: [])
        }
        #expect(throws: ProtoCError.unknownMessage("no protobuf-c descriptor named \"mesh.v1.Nope\"")) {
            try ProtoC.sample(fullName: "mesh.v1.Nope")
        }
    }

    /// A value protobuf-c reads differently would show up as a difference in the comparison.
    @Test func comparisonSeesAChangedValue() throws {
        var peer = Mesh_V1_Peer()
        peer.persistentKeepalive = 25
        peer.allowedIps = ["100.64.0.2/32", "fd00::2/128"]
        let cView = try canonical(ProtoC.describe(fullName: "mesh.v1.Peer", bytes: try peer.serializedBytes()))
        peer.allowedIps.removeLast()
        #expect(cView != (try canonical(swiftJSON(peer))))
    }

    /// A known protobuf-c limit, pinned so it stays visible: C strings end at the first NUL, so a
    /// U+0000 that swift-protobuf happily encodes arrives cut short (docs/interop.md).
    @Test func cStringsEndAtNUL() throws {
        var lease = Mesh_V1_Lease()
        lease.ownerID = "A\u{0}B"
        let text = try ProtoC.describe(fullName: "mesh.v1.Lease", bytes: try lease.serializedBytes())
        #expect(text == #"{"owner_id":"A"}"#)
    }

    /// The other direction of the same gap: protobuf-c accepts invalid UTF-8 in a string field,
    /// swift-protobuf refuses the whole message.
    @Test func invalidUTF8PassesCButNotSwift() throws {
        let bytes: [UInt8] = [0x12, 0x02, 0xFF, 0x41]  // Lease.owner_id = 0xFF 'A'
        _ = try ProtoC.describe(fullName: "mesh.v1.Lease", bytes: bytes)
        #expect(throws: (any Error).self) { try Mesh_V1_Lease(serializedBytes: bytes) }
    }

    /// Proto3 JSON conventions line up: 64-bit integers as strings, enums by name, zero values omitted.
    @Test func describesAKnownMessageExactly() throws {
        var stats = Mesh_V1_PeerStats()
        stats.publicKey = "k"
        stats.rxBytes = UInt64.max
        stats.lastHandshakeMs = -1
        stats.persistentKeepalive = 25
        let text = try ProtoC.describe(fullName: "mesh.v1.PeerStats", bytes: try stats.serializedBytes())
        #expect(text == #"{"public_key":"k","last_handshake_ms":"-1","rx_bytes":"18446744073709551615","persistent_keepalive":25}"#)

        var error = Mesh_V1_Error()
        error.code = .quotaExceeded
        error.plan = .team
        let errorText = try ProtoC.describe(fullName: "mesh.v1.Error", bytes: try error.serializedBytes())
        #expect(errorText == #"{"code":"ERROR_CODE_QUOTA_EXCEEDED","plan":"PLAN_TEAM"}"#)
    }
}
