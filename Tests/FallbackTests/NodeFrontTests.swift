import Foundation
import MeshDomain
import MeshPKI
import MeshProto
import MeshTestSupport
import NodeApplierCore
import Synchronization
import Testing

/// The node side of the fallback: the certificate of the HTTPS front is renewed before it expires
/// and re-issued when the node's name changes. The issuer is a real tenant CA called in-process
/// (ProvisionSvc's side is in FallbackE2ETests).
@Suite(.timeLimit(.minutes(2)))
struct NodeFrontTests {
    @Test func theFrontRenewsItsCertificateAndFollowsARename() async throws {
        let ca = try TenantAuthority.create(tenantID: "t", tenantName: "T")
        let name = Mutex("alpha.quazzar.mesh")
        let lifetime = Mutex<TimeInterval>(3)
        let issued = Mutex(0)
        let ip = "127.\(Int.random(in: 100...250)).\(Int.random(in: 1...250)).21"
        var reg = Mesh_V1_RegisterNodeResponse()
        reg.node.id = "node-1"
        reg.node.tenantID = "t"
        reg.node.ipv4 = ip
        let service = NodeHTTPSService(
            identity: NodeIdentity(registration: reg), port: 8443, upstream: ("127.0.0.1", 9), retryDelay: .milliseconds(200),
            currentName: { name.withLock { $0 } },
            request: { der async throws(MeshError) in
                let dns = name.withLock { $0 }
                do {
                    let c = try ca.issueServer(publicKeyDER: der, dnsNames: [dns], ipAddresses: [ip], lifetime: lifetime.withLock { $0 })
                    issued.withLock { $0 += 1 }
                    var r = Mesh_V1_NodeCertificateResponse()
                    r.certificatePem = c.pemText
                    r.caCertificatePem = ca.certificatePEM
                    r.notBeforeMs = Int64(c.notValidBefore.timeIntervalSince1970 * 1000)
                    r.notAfterMs = Int64(c.notValidAfter.timeIntervalSince1970 * 1000)
                    r.dnsNames = [dns]
                    r.ipAddresses = [ip]
                    return r
                } catch {
                    throw .internal("\(error)")
                }
            },
            logger: TestEnvironment.logger("front"))
        func waitFor(_ what: String, _ condition: () -> Bool) async throws {
            // Generous: the whole suite runs at once on two cores.
            let deadline = ContinuousClock.now + .seconds(90)
            while !condition() {
                guard ContinuousClock.now < deadline else {
                    Issue.record("timed out waiting for \(what)")
                    return
                }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await service.run() }
            // A leaf that is two thirds through its life (3 s, backdated 5 minutes) is renewed.
            try await waitFor("renewals") { issued.withLock { $0 } >= 3 }
            // A long-lived one is not renewed again soon...
            lifetime.withLock { $0 = CertificateLifetime.node }
            try await waitFor("a long-lived leaf") { (service.certificate?.notAfterMs ?? 0) > Int64(Date().addingTimeInterval(86_400).timeIntervalSince1970 * 1000) }
            let settled = issued.withLock { $0 }
            try await Task.sleep(for: .seconds(2))
            #expect(issued.withLock { $0 } == settled, "no renewal while the leaf is young")
            // ...but a rename brings a new one for the new name.
            name.withLock { $0 = "beta.quazzar.mesh" }
            try await waitFor("the renamed leaf") { service.certificate?.dnsNames == ["beta.quazzar.mesh"] }
            #expect(issued.withLock { $0 } == settled + 1)
            group.cancelAll()
        }
    }
}
