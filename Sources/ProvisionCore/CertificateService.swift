import Crypto
import Foundation
import Logging
import MeshDomain
import MeshPKI
import MeshProto

/// A tenant's certificate authority as stored: the certificate, and the private key (sealed or not).
public struct StoredAuthority: Sendable, Equatable {
    public var certificatePEM: String
    public var privateKey: [UInt8]
    public var keySealed: Bool
    public var notAfter: Date

    public init(certificatePEM: String, privateKey: [UInt8], keySealed: Bool, notAfter: Date) {
        self.certificatePEM = certificatePEM
        self.privateKey = privateKey
        self.keySealed = keySealed
        self.notAfter = notAfter
    }
}

/// The tenant certificate authorities (CertificateService), table `tenant_authorities`.
public protocol AuthorityRepository: Sendable {
    /// The tenant's authority, or nil when it has none yet.
    func authority(tenant: UUID) async throws(MeshError) -> StoredAuthority?
    /// Stores `a` unless the tenant has an authority already, and returns the one stored (the first
    /// writer wins, so replicas racing on a tenant's first use agree). `notFound` for an unknown tenant.
    func insertAuthority(tenant: UUID, _ a: StoredAuthority) async throws(MeshError) -> StoredAuthority
}

/// The phone fallback's certificates (docs/fallback.md): each tenant's certificate authority, made on
/// first use and kept by ProvisionSvc; the leaf of each node's HTTPS front, for the node's mesh name
/// and addresses; and what a paired phone gets to fall back on. The CA's private key never leaves
/// this service.
public struct CertificateService: Sendable {
    let authorities: any AuthorityRepository
    let nodes: any NodeRepository
    /// Seals the CA private keys at rest (AES-GCM) when set.
    let sealingKey: SymmetricKey?
    let logger: Logger

    /// The port of every node's HTTPS front.
    public static let httpsPort = 8443

    public init(authorities: any AuthorityRepository, nodes: any NodeRepository, sealingKey: SymmetricKey?, logger: Logger) {
        self.authorities = authorities
        self.nodes = nodes
        self.sealingKey = sealingKey
        self.logger = logger
    }

    /// The tenant's authority, made and stored on first use.
    func authority(_ tenant: TenantRecord) async throws(MeshError) -> TenantAuthority {
        if let stored = try await authorities.authority(tenant: tenant.id) { return try unseal(stored) }
        let made: TenantAuthority
        do {
            made = try TenantAuthority.create(tenantID: tenant.id.lowercased, tenantName: tenant.name)
        } catch {
            throw .internal("could not make the tenant certificate authority")
        }
        let stored = try await authorities.insertAuthority(tenant: tenant.id, try seal(made))
        logger.info("tenant certificate authority made", metadata: ["tenant.id": "\(tenant.id.lowercased)"])
        return try unseal(stored)
    }

    /// Issues the certificate of a node's HTTPS front: its DNS name and mesh addresses, for its public key.
    public func issueNode(_ req: Mesh_V1_NodeCertificateRequest, subject: String) async throws(MeshError) -> Mesh_V1_NodeCertificateResponse {
        let tenantID = try ProvisionValidate.uuid(req.tenantID, field: "tenant_id")
        let nodeID = try ProvisionValidate.uuid(req.nodeID, field: "node_id")
        // The subject names the node, and the bus lets a node publish on its own subjects only.
        guard subject == MeshSubjects.nodeCertificate(tenant: tenantID.lowercased, node: nodeID.lowercased) else {
            throw .permissionDenied("the subject does not name this node")
        }
        guard let found = try await nodes.nodes(tenant: tenantID), let node = found.1.first(where: { $0.id == nodeID }) else {
            throw .notFound("no such node")
        }
        let tenant = found.0
        let ca = try await authority(tenant)
        let dns = MeshName.dnsName(slug: node.slug, domain: tenant.domain)
        let ips = [node.ipv4, node.ipv6].filter { !$0.isEmpty }
        let leaf: X509Leaf
        do {
            let cert = try ca.issueServer(publicKeyDER: Array(req.publicKeyDer), dnsNames: [dns], ipAddresses: ips)
            leaf = X509Leaf(pem: cert.pemText, notBefore: cert.notValidBefore, notAfter: cert.notValidAfter)
        } catch {
            if case .invalidRequest(let message) = error { throw .invalidArgument(field: "public_key_der", message: message) }
            throw .internal("could not sign the node certificate")
        }
        var resp = Mesh_V1_NodeCertificateResponse()
        resp.certificatePem = leaf.pem
        resp.caCertificatePem = ca.certificatePEM
        resp.notBeforeMs = leaf.notBefore.unixMilliseconds
        resp.notAfterMs = leaf.notAfter.unixMilliseconds
        resp.dnsNames = [dns]
        resp.ipAddresses = ips
        logger.info("node certificate issued", metadata: ["tenant.id": "\(tenantID.lowercased)", "node.id": "\(nodeID.lowercased)",
                                                          "dns": "\(dns)", "not_after": "\(leaf.notAfter)"])
        return resp
    }

    /// What a paired phone falls back on: each node's HTTPS URL over the mesh (the hub first) and the
    /// tenant CA to trust for them.
    public func fallback(tenant: UUID) async throws(MeshError) -> Mesh_V1_PhoneFallback {
        guard let found = try await nodes.nodes(tenant: tenant) else { throw .notFound("unknown tenant") }
        let (t, all) = found
        let ca = try await authority(t)
        var f = Mesh_V1_PhoneFallback()
        f.caCertificatePem = ca.certificatePEM
        let ordered = all.filter { $0.id.lowercased == t.hubNodeID } + all.filter { $0.id.lowercased != t.hubNodeID }
        f.nodes = ordered.map { n in
            var x = Mesh_V1_FallbackNode()
            x.nodeID = n.id.lowercased
            x.dnsName = MeshName.dnsName(slug: n.slug, domain: t.domain)
            x.url = "https://\(x.dnsName):\(Self.httpsPort)"
            x.ipv4 = n.ipv4
            x.ipv6 = n.ipv6
            return x
        }
        return f
    }

    private struct X509Leaf {
        var pem: String
        var notBefore: Date
        var notAfter: Date
    }

    private func seal(_ a: TenantAuthority) throws(MeshError) -> StoredAuthority {
        let key = Array(a.privateKeyPEM.utf8)
        guard let sealingKey else {
            return StoredAuthority(certificatePEM: a.certificatePEM, privateKey: key, keySealed: false, notAfter: a.certificate.notValidAfter)
        }
        do {
            guard let combined = try AES.GCM.seal(key, using: sealingKey).combined else { throw MeshError.internal("seal") }
            return StoredAuthority(certificatePEM: a.certificatePEM, privateKey: Array(combined), keySealed: true, notAfter: a.certificate.notValidAfter)
        } catch {
            throw .internal("could not seal the CA key")
        }
    }

    private func unseal(_ s: StoredAuthority) throws(MeshError) -> TenantAuthority {
        var key = s.privateKey
        if s.keySealed {
            guard let sealingKey else { throw .internal("the CA key is sealed and ProvisionSvc has no sealing key (MESH_CA_SEALING_KEY)") }
            do {
                key = Array(try AES.GCM.open(AES.GCM.SealedBox(combined: key), using: sealingKey))
            } catch {
                throw .internal("the CA key does not open with this sealing key")
            }
        }
        do {
            return try TenantAuthority(certificatePEM: s.certificatePEM, privateKeyPEM: String(decoding: key, as: UTF8.self))
        } catch {
            throw .internal("the stored CA does not parse")
        }
    }
}
