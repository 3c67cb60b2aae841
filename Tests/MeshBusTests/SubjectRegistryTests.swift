import CNats
import Foundation
@testable import MeshBus
import MeshClient
import MeshDomain
import MeshProto
import Testing

/// A service error arrives as ADR-32 headers plus the protobuf body; the caller gets the domain
/// error back, and transport failures become unavailable / deadline exceeded.
@Suite(.timeLimit(.minutes(2))) struct BusErrorMappingTests {
    @Test func busErrorsMapBackToTheDomainError() throws {
        let all: [MeshError] = [
            .invalidArgument(field: "label", message: "label must not be empty"), .notFound("no such device"),
            .alreadyExists("exists"), .conflict("conflict"), .permissionDenied("denied"), .unauthenticated("who?"),
            .quotaExceeded(plan: .pro, cap: 20), .rateLimited(retryAfterSeconds: 42), .poolExhausted("full"),
            .unavailable("down"), .deadlineExceeded("slow"), .failedPrecondition("not now"), .internal("boom"),
        ]
        for e in all {
            let wire = BusError.service(code: e.busCode, description: e.message, body: try e.proto.serializedBytes())
            #expect(MeshError(busError: wire) == e)
        }
        #expect(MeshError(busError: BusError.service(code: 503, description: "x", body: [])).code == .unavailable)
        #expect(MeshError(busError: BusError.service(code: 504, description: "x", body: [])).code == .deadlineExceeded)
        #expect(MeshError(busError: BusError.service(code: 500, description: "x", body: [0xff, 0xff])).code == .internal)
        #expect(MeshError(busError: BusError.noResponders(subject: "a.b")).code == .unavailable)
        #expect(MeshError(busError: BusError.timeout(subject: "a.b")).code == .deadlineExceeded)
        #expect(MeshError(busError: CancellationError()).code == .unavailable)
        #expect(MeshError(busError: BusError.closed).code == .unavailable)
        // A publish that hit a server going away: unknown delivery, like a lost reply; never `internal`.
        #expect(MeshError(busError: BusError.connectionLost(operation: "publish", text: "IO Error")).code == .unavailable)
        #expect(MeshError(busError: BusError.nats(status: -1, text: "Maximum Payload Exceeded", operation: "publish")).code == .internal)
    }

    /// nats.c's statuses that mean the connection failed under the operation come out as
    /// `connectionLost`; the others keep their status and text.
    @Test func connectionFailuresAreTheirOwnCase() {
        for s in [NATS_IO_ERROR, NATS_STALE_CONNECTION, NATS_CONNECTION_DISCONNECTED, NATS_NO_SERVER, NATS_NOT_YET_CONNECTED] {
            guard case .connectionLost(let op, let text) = BusConnection.natsError(s, "publish") else {
                Issue.record("status \(s.rawValue) is not a lost connection: \(BusConnection.natsError(s, "publish"))")
                continue
            }
            #expect(op == "publish" && !text.isEmpty)
        }
        #expect(BusConnection.natsError(NATS_CONNECTION_CLOSED, "publish") == .closed)
        guard case .nats(let status, _, "publish") = BusConnection.natsError(NATS_MAX_PAYLOAD, "publish") else {
            Issue.record("a payload too large is not a nats error")
            return
        }
        #expect(status == Int32(bitPattern: NATS_MAX_PAYLOAD.rawValue))
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
