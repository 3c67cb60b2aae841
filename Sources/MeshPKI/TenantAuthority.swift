import Crypto
import Foundation
import SwiftASN1
import X509

/// Why a certificate could not be made or read.
public enum PKIError: Error, Sendable, Equatable {
    /// A PEM document or key that does not parse.
    case malformed(String)
    /// A certificate request with nothing to certify, or an address that is not IPv4/IPv6 text.
    case invalidRequest(String)
}

/// How long the certificates live and when a node renews its own (docs/fallback.md).
public enum CertificateLifetime {
    /// The tenant CA: ten years.
    public static let authority: TimeInterval = 10 * 365 * 86_400
    /// A node's leaf: thirty days.
    public static let node: TimeInterval = 30 * 86_400
    /// Backdating of notBefore, for clocks a little behind.
    public static let backdate: TimeInterval = 300

    /// When a leaf valid from `notBefore` to `notAfter` is renewed: once two thirds of its life have passed.
    public static func renewal(notBefore: Date, notAfter: Date) -> Date {
        notBefore.addingTimeInterval(notAfter.timeIntervalSince(notBefore) * 2 / 3)
    }
}

/// A tenant's certificate authority: a self-signed P-256 root that signs the leaf of every node's
/// HTTPS front. Its private key stays with whoever holds this value (ProvisionSvc); only
/// ``certificatePEM`` is ever handed out.
public struct TenantAuthority: Sendable {
    public let certificate: Certificate
    let key: P256.Signing.PrivateKey

    /// A new authority for a tenant, valid from `now` for ``CertificateLifetime/authority``.
    public static func create(tenantID: String, tenantName: String, now: Date = Date()) throws(PKIError) -> TenantAuthority {
        let key = P256.Signing.PrivateKey()
        do {
            let name = try DistinguishedName {
                OrganizationName("Quazzar Mesh")
                OrganizationalUnitName(tenantID)
                CommonName("\(tenantName.isEmpty ? tenantID : tenantName) mesh CA")
            }
            let publicKey = Certificate.PublicKey(key.publicKey)
            let extensions = try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(hash: publicKey)
            }
            let cert = try Certificate(version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: publicKey,
                                       notValidBefore: now.addingTimeInterval(-CertificateLifetime.backdate),
                                       notValidAfter: now.addingTimeInterval(CertificateLifetime.authority),
                                       issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256,
                                       extensions: extensions, issuerPrivateKey: Certificate.PrivateKey(key))
            return TenantAuthority(certificate: cert, key: key)
        } catch {
            throw .malformed("could not build the CA certificate: \(error)")
        }
    }

    /// An authority read back from its stored certificate and private key (both PEM).
    public init(certificatePEM: String, privateKeyPEM: String) throws(PKIError) {
        do {
            certificate = try Certificate(pemEncoded: certificatePEM)
        } catch {
            throw .malformed("the CA certificate does not parse: \(error)")
        }
        do {
            key = try P256.Signing.PrivateKey(pemRepresentation: privateKeyPEM)
        } catch {
            throw .malformed("the CA private key does not parse: \(error)")
        }
        guard certificate.publicKey == Certificate.PublicKey(key.publicKey) else {
            throw .malformed("the CA private key does not match its certificate")
        }
    }

    init(certificate: Certificate, key: P256.Signing.PrivateKey) {
        self.certificate = certificate
        self.key = key
    }

    /// The certificate to hand out (PEM).
    public var certificatePEM: String {
        // A certificate this type built or parsed always serialises.
        (try? certificate.serializeAsPEM().pemString) ?? ""
    }

    /// The private key, for storage by the authority's owner only (PEM).
    public var privateKeyPEM: String { key.pemRepresentation }

    /// Signs a leaf for a server known by `dnsNames` and `ipAddresses` (IPv4/IPv6 text), for the
    /// holder of `publicKeyDER` (a DER SubjectPublicKeyInfo), valid from `now` for `lifetime`
    /// (never past the authority's own end).
    public func issueServer(publicKeyDER: [UInt8], dnsNames: [String], ipAddresses: [String], now: Date = Date(),
                            lifetime: TimeInterval = CertificateLifetime.node) throws(PKIError) -> Certificate {
        guard !dnsNames.isEmpty || !ipAddresses.isEmpty else { throw .invalidRequest("a certificate needs at least one name or address") }
        let publicKey: Certificate.PublicKey
        do {
            publicKey = try Certificate.PublicKey(derEncoded: publicKeyDER)
        } catch {
            throw .invalidRequest("public_key_der is not a DER SubjectPublicKeyInfo")
        }
        var names: [GeneralName] = dnsNames.map { .dnsName($0) }
        for ip in ipAddresses {
            guard let bytes = IPText.bytes(ip) else { throw .invalidRequest("\(ip) is not an IPv4 or IPv6 address") }
            names.append(.ipAddress(ASN1OctetString(contentBytes: ArraySlice(bytes))))
        }
        let notAfter = min(now.addingTimeInterval(lifetime), certificate.notValidAfter)
        do {
            let subject = try DistinguishedName {
                OrganizationName("Quazzar Mesh")
                CommonName(dnsNames.first ?? ipAddresses[0])
            }
            let authorityKeyID = try certificate.extensions.subjectKeyIdentifier?.keyIdentifier
            let extensions = try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.serverAuth])
                SubjectAlternativeNames(names)
                if let authorityKeyID { AuthorityKeyIdentifier(keyIdentifier: authorityKeyID) }
            }
            return try Certificate(version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: publicKey,
                                   notValidBefore: now.addingTimeInterval(-CertificateLifetime.backdate), notValidAfter: notAfter,
                                   issuer: certificate.subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
                                   extensions: extensions, issuerPrivateKey: Certificate.PrivateKey(key))
        } catch {
            throw .malformed("could not sign the certificate: \(error)")
        }
    }
}

extension Certificate {
    /// The certificate as PEM text.
    public var pemText: String { (try? serializeAsPEM().pemString) ?? "" }

    /// The DNS names and IP addresses (text) of its subjectAltName.
    public var subjectAltNames: (dns: [String], ip: [String]) {
        guard let san = try? extensions.subjectAlternativeNames else { return ([], []) }
        var dns: [String] = [], ips: [String] = []
        for name in san {
            switch name {
            case .dnsName(let n): dns.append(n)
            case .ipAddress(let octets): ips.append(IPText.text(Array(octets.bytes)))
            default: break
            }
        }
        return (dns, ips)
    }
}

/// A server's key pair for its HTTPS front: P-256, made where it is used.
public struct ServerKey: Sendable {
    public let key: P256.Signing.PrivateKey
    public init() { key = P256.Signing.PrivateKey() }
    /// The DER SubjectPublicKeyInfo sent with a certificate request.
    public var publicKeyDER: [UInt8] { Array(key.publicKey.derRepresentation) }
    /// The private key (PEM), for the TLS library.
    public var privateKeyPEM: String { key.pemRepresentation }
}

/// IPv4/IPv6 text to and from its bytes.
enum IPText {
    static func bytes(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
        return nil
    }

    static func text(_ bytes: [UInt8]) -> String {
        var buffer = [CChar](repeating: 0, count: 64)
        let family = bytes.count == 4 ? AF_INET : AF_INET6
        guard bytes.count == 4 || bytes.count == 16,
              bytes.withUnsafeBytes({ inet_ntop(family, $0.baseAddress, &buffer, socklen_t(buffer.count)) }) != nil
        else { return bytes.map { String($0) }.joined(separator: ".") }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
