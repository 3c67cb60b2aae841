import Crypto
import Foundation
import MeshPKI
import Testing
import X509

/// The tenant CA and the node leaves, checked with swift-certificates' own RFC 5280 verifier.
struct TenantAuthorityTests {
    static func verify(_ leaf: Certificate, roots: [Certificate], host: String? = nil, ip: String? = nil) async -> Bool {
        var verifier = Verifier(rootCertificates: CertificateStore(roots)) {
            RFC5280Policy()
            ServerIdentityPolicy(serverHostname: host, serverIP: ip)
        }
        if case .validCertificate = await verifier.validate(leaf: leaf, intermediates: CertificateStore()) { return true }
        return false
    }

    @Test func aNodeLeafVerifiesForItsNamesAndAddressesOnly() async throws {
        let ca = try TenantAuthority.create(tenantID: "t-1", tenantName: "Acme")
        let key = ServerKey()
        let leaf = try ca.issueServer(publicKeyDER: key.publicKeyDER, dnsNames: ["alpha.quazzar.mesh"], ipAddresses: ["100.64.0.1", "fd7a:115c:a1e0::1"])
        #expect(leaf.subjectAltNames.dns == ["alpha.quazzar.mesh"])
        #expect(leaf.subjectAltNames.ip == ["100.64.0.1", "fd7a:115c:a1e0::1"])
        #expect(leaf.publicKey == Certificate.PublicKey(key.key.publicKey))
        #expect(try leaf.extensions.basicConstraints == .notCertificateAuthority)
        #expect(await Self.verify(leaf, roots: [ca.certificate], host: "alpha.quazzar.mesh"))
        #expect(await Self.verify(leaf, roots: [ca.certificate], ip: "100.64.0.1"))
        #expect(!(await Self.verify(leaf, roots: [ca.certificate], host: "beta.quazzar.mesh")), "another node's name")
        #expect(!(await Self.verify(leaf, roots: [ca.certificate], ip: "100.64.0.2")), "another address")
        // Another tenant's CA does not vouch for this leaf.
        let other = try TenantAuthority.create(tenantID: "t-2", tenantName: "Other")
        #expect(!(await Self.verify(leaf, roots: [other.certificate], host: "alpha.quazzar.mesh")))
        // The leaf lives 30 days, renewed at two thirds.
        let life = leaf.notValidAfter.timeIntervalSince(leaf.notValidBefore)
        #expect(abs(life - CertificateLifetime.node - CertificateLifetime.backdate) < 5)
        let renew = CertificateLifetime.renewal(notBefore: leaf.notValidBefore, notAfter: leaf.notValidAfter)
        #expect(abs(renew.timeIntervalSince(leaf.notValidBefore) - life * 2 / 3) < 1)
    }

    @Test func theAuthorityRoundTripsThroughItsStoredForm() throws {
        let ca = try TenantAuthority.create(tenantID: "t-1", tenantName: "Acme")
        let back = try TenantAuthority(certificatePEM: ca.certificatePEM, privateKeyPEM: ca.privateKeyPEM)
        #expect(back.certificate == ca.certificate)
        #expect(try back.certificate.extensions.basicConstraints == .isCertificateAuthority(maxPathLength: 0))
        #expect(!ca.certificatePEM.contains("PRIVATE KEY"), "the served form holds no key")
        // A key that is not the certificate's is refused.
        let other = try TenantAuthority.create(tenantID: "t-2", tenantName: "Other")
        #expect(throws: PKIError.self) { try TenantAuthority(certificatePEM: ca.certificatePEM, privateKeyPEM: other.privateKeyPEM) }
        #expect(throws: PKIError.self) { try TenantAuthority(certificatePEM: "not a pem", privateKeyPEM: ca.privateKeyPEM) }
    }

    @Test func badRequestsAreRefused() throws {
        let ca = try TenantAuthority.create(tenantID: "t-1", tenantName: "Acme")
        let key = ServerKey()
        #expect(throws: PKIError.invalidRequest("a certificate needs at least one name or address")) {
            try ca.issueServer(publicKeyDER: key.publicKeyDER, dnsNames: [], ipAddresses: [])
        }
        #expect(throws: PKIError.self) { try ca.issueServer(publicKeyDER: [1, 2, 3], dnsNames: ["a.quazzar.mesh"], ipAddresses: []) }
        #expect(throws: PKIError.invalidRequest("300.1.1.1 is not an IPv4 or IPv6 address")) {
            try ca.issueServer(publicKeyDER: key.publicKeyDER, dnsNames: ["a.quazzar.mesh"], ipAddresses: ["300.1.1.1"])
        }
    }
}
