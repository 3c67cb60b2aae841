import Foundation
import GatewayCore
import MeshAuth
import MeshDomain
import Testing

/// The providers document, the cookie sealer and the sign-in refusals' HTTP form: no servers.
@Suite struct SignInConfigurationTests {
    let secretFile: String = {
        let path = NSTemporaryDirectory() + "oidc-secret-\(UUID().uuidString)"
        try? Data("s3cret\n".utf8).write(to: URL(fileURLWithPath: path))
        return path
    }()

    func parse(_ json: String) throws(MeshError) -> [OIDCProviderConfiguration] {
        try OIDCProviderConfiguration.parse(json) { path in try String(contentsOfFile: path, encoding: .utf8) }
    }

    @Test func severalProvidersWithTheirRules() throws {
        let tenant = UUID().uuidString
        let list = try parse(#"""
            [{"id": "corp", "name": "Corp SSO", "issuer": "https://sso.example.com/realms/corp", "client_id": "mesh",
              "client_secret_file": "\#(secretFile)", "scopes": ["email", "groups"], "tenant_claim": "mesh_tenant",
              "admin_claim": "groups=mesh-admins", "saml_claim": "idp=corp-saml"},
             {"id": "google", "issuer": "https://accounts.google.com", "client_id": "g", "tenant": "\#(tenant)"}]
            """#)
        #expect(list.map(\.id) == ["corp", "google"])
        #expect(list[0].clientSecret == "s3cret" && list[0].name == "Corp SSO" && list[0].scopes == ["openid", "email", "groups"])
        #expect(list[0].mapping == ProviderClaimMapping(tenantClaim: "mesh_tenant", admin: ClaimMatch(claim: "groups", value: "mesh-admins"),
                                                        saml: ClaimMatch(claim: "idp", value: "corp-saml")))
        #expect(list[1].clientSecret == nil && list[1].name == "google" && list[1].scopes == ["openid", "email", "profile"])
        #expect(list[1].mapping.tenant == tenant.lowercased() && list[1].mapping.saml == ClaimMatch(claim: "amr", value: "saml"))
    }

    @Test("a bad providers document is refused at start-up", arguments: [
        "{}", "[{}]", #"[{"id":"a","issuer":"https://x.example","client_id":"c","secret":"inline"}]"#,
        #"[{"id":"a b","issuer":"https://x.example","client_id":"c"}]"#, #"[{"id":"a","issuer":"ftp://x.example","client_id":"c"}]"#,
        #"[{"id":"a","issuer":"https://x.example"}]"#, #"[{"id":"a","issuer":"https://x.example","client_id":"c","tenant":"acme"}]"#,
        #"[{"id":"a","issuer":"https://x.example","client_id":"c","client_secret_file":"/nonexistent/secret"}]"#,
        #"[{"id":"a","issuer":"https://x.example","client_id":"c"},{"id":"a","issuer":"https://y.example","client_id":"d"}]"#,
        #"[{"id":"a","issuer":"https://x.example","client_id":"c","admin_claim":"=x"}]"#,
    ])
    func badDocuments(json: String) {
        #expect(throws: MeshError.self) { try parse(json) }
    }

    @Test func cookiesOpenOnlyWithTheirSecretAndPurpose() throws {
        let sealer = try CookieSealer(secret: Array("0123456789abcdef0123456789abcdef".utf8))
        let s = SessionCookie(sid: "s", uid: "u", tid: "t", role: "owner", amr: ["saml"], provider: "corp", iat: 1, idle: 2, max: 3)
        let sealed = sealer.seal(s, purpose: .session)
        #expect(sealer.open(sealed, as: SessionCookie.self, purpose: .session) == s)
        #expect(sealer.open(sealed, as: SessionCookie.self, purpose: .login) == nil, "a session cookie is no sign-in attempt")
        let other = try CookieSealer(secret: Array("another secret of at least 32 bytes!".utf8))
        #expect(other.open(sealed, as: SessionCookie.self, purpose: .session) == nil)
        var bytes = Array(sealed)
        bytes[bytes.count / 2] = bytes[bytes.count / 2] == "A" ? "B" : "A"
        #expect(sealer.open(String(bytes), as: SessionCookie.self, purpose: .session) == nil, "a tampered cookie does not open")
        #expect(throws: MeshError.self) { try CookieSealer(secret: Array("short".utf8)) }
        // Two seals of the same value differ (a fresh nonce each time).
        #expect(sealer.seal(s, purpose: .session) != sealed)
    }

    @Test func pkceIsS256() {
        // RFC 7636, appendix B.
        #expect(SignInSecrets.challenge(verifier: "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")
        let v = SignInSecrets.random()
        #expect(v.count == 43 && v.allSatisfy { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" })
    }

    @Test func signInRefusalsHaveTheirStatusAndReason() {
        let cases: [(SignInError, Int, String)] = [
            (.wrongNonce, 401, "unauthenticated"), (.replayed, 401, "unauthenticated"), (.unknownKey, 401, "unauthenticated"),
            (.notInvited, 403, "permission_denied"), (.unknownProvider("x"), 404, "not_found"), (.providerUnavailable("x"), 503, "unavailable"),
        ]
        for (e, status, code) in cases {
            let api = APIError(e)
            #expect(Int(api.status.code) == status && api.code == code && api.details["reason"] == .string(e.reason), "\(e)")
        }
        #expect(SignInError.fromBus(SignInError.replayed.meshError) == .replayed)
        #expect(SignInError.fromBus(.unauthenticated("something else")) == nil)
    }
}
