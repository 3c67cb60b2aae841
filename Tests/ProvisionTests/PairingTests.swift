import Crypto
import Foundation
import MeshBus
import MeshClient
import MeshDomain
import MeshPKI
import MeshProto
import MeshStore
import MeshTestSupport
import Testing
import X509

/// The pairing reply and the node certificates of the phone fallback, through ProvisionSvc replicas
/// with PostgreSQL (docs/fallback.md).
@Suite(.timeLimit(.minutes(5)), .enabled(if: TestEnvironment.hasInfra, "\(TestEnvironment.skipReason)"))
struct PairingTests {
    @Test func pairingRepliesCarryTheNodesAndOneTenantCA() async throws {
        let sealing = Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
        let c = try await ControlPlane.start("pair", replicas: 3, environment: ["MESH_CA_SEALING_KEY": sealing, "MESH_RATE_LIMIT": "0"])
        let t = try await c.readyTenant(.enterprise)
        let admin = try await c.user(t, .admin)
        let (second, _) = try await c.node(t, admin: admin, name: "edge two", endpoint: "192.0.2.251:51820")
        let nodes = try await c.client.listNodes(caller: admin)
        let hub = try #require(nodes.first { $0.hub })

        // Phones paired at once on three replicas: one CA, made once, in every reply.
        let replies = try await withThrowingTaskGroup(of: Mesh_V1_CreateDeviceResponse.self) { group in
            for i in 0..<6 {
                group.addTask { try await c.client.createDevice(caller: admin, label: "phone \(i)", type: i % 2 == 0 ? .iphone : .android, pair: true) }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(replies.count == 6)
        let pems = Set(replies.map(\.fallback.caCertificatePem))
        #expect(pems.count == 1, "one CA per tenant")
        let caPEM = try #require(pems.first)
        let ca = try Certificate(pemEncoded: caPEM)
        #expect(try ca.extensions.basicConstraints == .isCertificateAuthority(maxPathLength: 0))
        for r in replies {
            #expect(r.hasFallback && !r.config.isEmpty && !r.qrSvg.isEmpty)
            #expect(r.fallback.nodes.map(\.nodeID) == [hub.id] + nodes.filter { !$0.hub }.map(\.id), "every node, the hub first")
            #expect(r.fallback.nodes.map(\.url) == r.fallback.nodes.map { "https://\($0.dnsName):8443" })
            #expect(r.fallback.nodes.first { $0.nodeID == second.id }?.dnsName == second.dnsName)
        }
        let rows = try await c.store.query("SELECT private_key, key_sealed FROM tenant_authorities WHERE tenant_id = $1", UUID(uuidString: t.id)!)
        #expect(rows.count == 1)
        #expect(try rows[0].decode("key_sealed", as: Bool.self), "sealed at rest with MESH_CA_SEALING_KEY")
        let stored = try rows[0].decode("private_key", as: ByteA.self).bytes
        #expect(!String(decoding: stored, as: UTF8.self).contains("PRIVATE KEY"))

        // A device without pair gets no fallback; pairing is for phones only.
        let plain = try await c.client.createDevice(caller: admin, label: "phone plain", type: .iphone)
        #expect(!plain.hasFallback)
        await #expect(throws: MeshError.invalidArgument(field: "pair", message: "only a phone (type iphone or android) is paired")) {
            _ = try await c.client.createDevice(caller: admin, label: "laptop", type: .laptop, pair: true)
        }

        // A node's leaf: its name and both mesh addresses, for its own key, signed by the same CA.
        let key = P256.Signing.PrivateKey()
        let issued = try await c.client.nodeCertificate(tenantID: t.id, nodeID: second.id, publicKeyDER: Array(key.publicKey.derRepresentation))
        #expect(issued.caCertificatePem == caPEM)
        #expect(issued.dnsNames == [second.dnsName] && issued.ipAddresses == [second.ipv4, second.ipv6])
        let leaf = try Certificate(pemEncoded: issued.certificatePem)
        #expect(leaf.publicKey == Certificate.PublicKey(key.publicKey))
        #expect(leaf.subjectAltNames.dns == [second.dnsName] && leaf.subjectAltNames.ip == [second.ipv4, second.ipv6])
        var verifier = Verifier(rootCertificates: CertificateStore([ca])) {
            RFC5280Policy()
            ServerIdentityPolicy(serverHostname: second.dnsName, serverIP: nil)
        }
        let result = await verifier.validate(leaf: leaf, intermediates: CertificateStore())
        guard case .validCertificate = result else {
            Issue.record("the leaf does not verify against the tenant CA: \(result)")
            return
        }

        // Refusals: a subject that names another node, an unknown node, a key that is not DER.
        var forged = Mesh_V1_NodeCertificateRequest()
        forged.tenantID = t.id
        forged.nodeID = second.id
        forged.publicKeyDer = key.publicKey.derRepresentation
        await #expect(throws: MeshError.permissionDenied("the subject does not name this node")) {
            let _: Mesh_V1_NodeCertificateResponse = try await c.bus.call(MeshSubjects.nodeCertificate(tenant: t.id, node: hub.id), forged,
                                                                          as: Mesh_V1_NodeCertificateResponse.self, requestID: nil, timeout: .seconds(5))
        }
        await #expect(throws: MeshError.notFound("no such node")) {
            _ = try await c.client.nodeCertificate(tenantID: t.id, nodeID: UUID().uuidString.lowercased(), publicKeyDER: Array(key.publicKey.derRepresentation))
        }
        await #expect(throws: MeshError.self) {
            _ = try await c.client.nodeCertificate(tenantID: t.id, nodeID: second.id, publicKeyDER: [1, 2, 3])
        }
        try await c.stop()
    }
}
