import Crypto
import Foundation
@testable import GatewayCore
import Hummingbird
@testable import MeshAuth
import MeshDomain
import MeshKeys
import MeshProto
import Testing

/// Token verification and the error mapping, without any server.
@Suite(.timeLimit(.minutes(10))) struct GatewayAuthTests {
    let tenant = UUID().uuidString.lowercased()
    let user = UUID().uuidString.lowercased()

    @Test func hs256TokensRoundTripAndRefuseTheRest() async throws {
        let keys = try JWTKeyMaterial(hmacSecret: testSecret)
        let minter = try await TokenMinter(keys: keys)
        let verifier = await TokenVerifier(keys: keys)
        #expect(minter.algorithm == "HS256")

        let token = try await minter.user(tenantID: tenant, userID: user, role: .admin, amr: ["SAML"])
        #expect(try await verifier.verify(token) == .user(tenantID: tenant, userID: user, role: .admin, amr: ["saml"]))
        let node = UUID().uuidString.lowercased()
        #expect(try await verifier.verify(try await minter.node(tenantID: tenant, nodeID: node)) == .node(tenantID: tenant, nodeID: node))

        // Expired, unsigned, tampered, malformed, or with claims of the wrong shape: all unauthenticated.
        let expired = try await minter.user(tenantID: tenant, userID: user, role: .owner, ttl: .seconds(1), now: Date().addingTimeInterval(-60))
        var tampered = Array(token)
        tampered[tampered.count - 3] = tampered[tampered.count - 3] == "A" ? "B" : "A"
        let odd: [MeshClaims] = [
            MeshClaims(sub: user, tenant: "not-a-uuid", role: "owner", expires: Date().addingTimeInterval(60)),
            MeshClaims(sub: user, tenant: tenant, role: "superuser", expires: Date().addingTimeInterval(60)),
            MeshClaims(sub: user, tenant: tenant, role: nil, expires: Date().addingTimeInterval(60)),
            MeshClaims(sub: "node:nope", tenant: tenant, expires: Date().addingTimeInterval(60)),
            MeshClaims(sub: "someone", tenant: tenant, role: "owner", expires: Date().addingTimeInterval(60)),
        ]
        var bad = [expired, unsignedToken(tenant: tenant, user: user), String(tampered), "", "a.b", "a.b.c", "Bearer x"]
        for c in odd { bad.append(try await minter.sign(c)) }
        for t in bad {
            await #expect(throws: MeshError.self, "\(t.prefix(40))") { _ = try await verifier.verify(t) }
        }
        do {
            _ = try await verifier.verify(expired)
        } catch {
            #expect(error == .unauthenticated("token expired"))
        }
    }

    /// A token is verified once and then remembered by its text, but its expiry is checked on every
    /// use; the memory is bounded, and a tampered copy of a remembered token is still refused.
    @Test func verifiedTokensAreRememberedUntilTheyExpire() async throws {
        let keys = try JWTKeyMaterial(hmacSecret: testSecret)
        let minter = try await TokenMinter(keys: keys)
        let verifier = await TokenVerifier(keys: keys)
        let short = try await minter.user(tenantID: tenant, userID: user, role: .owner, ttl: .seconds(2))
        let identity = Identity.user(tenantID: tenant, userID: user, role: .owner, amr: [])
        #expect(try await verifier.verify(short) == identity)
        #expect(verifier.verified.count == 1)
        #expect(try await verifier.verify(short) == identity)
        var tampered = Array(short)
        tampered[tampered.count - 3] = tampered[tampered.count - 3] == "A" ? "B" : "A"
        await #expect(throws: MeshError.unauthenticated("invalid bearer token")) { _ = try await verifier.verify(String(tampered)) }
        // Past its expiry (whole seconds in the token), the remembered token is refused.
        let deadline = Date().addingTimeInterval(10)
        var refused: MeshError?
        while refused == nil, Date() < deadline {
            do { _ = try await verifier.verify(short) } catch { refused = error }
            if refused == nil { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(refused == .unauthenticated("token expired"))
        // Bounded: past the capacity it starts again, and every token still verifies.
        let small = VerifiedTokens(capacity: 3)
        for i in 0..<7 { small.insert("t\(i)", identity, expires: Date().addingTimeInterval(60)) }
        #expect(small.count == 1 && small.lookup("t6") != nil && small.lookup("t0") == nil)
        small.insert("old", identity, expires: Date().addingTimeInterval(-1))
        small.insert("t7", identity, expires: Date().addingTimeInterval(60))
        small.insert("t8", identity, expires: Date().addingTimeInterval(60))
        #expect(small.count == 3 && small.lookup("old") == nil, "the expired entry goes first")
        for _ in 0..<5000 {
            let t = try await minter.user(tenantID: tenant, userID: UUID().uuidString.lowercased(), role: .owner)
            _ = try await verifier.verify(t)
        }
        #expect(verifier.verified.count <= verifier.verified.capacity)
    }

    /// The Bearer scheme in any case, one or more spaces, the credentials without surrounding
    /// spaces and tabs; anything else is no bearer token.
    @Test func bearerCredentialsAreReadFromTheAuthorizationValue() {
        let cases: [(String, String?)] = [
            ("Bearer abc.def.ghi", "abc.def.ghi"), ("bearer abc", "abc"), ("BEARER abc", "abc"), ("bEaReR abc", "abc"),
            ("Bearer    abc  ", "abc"), ("Bearer \tabc\t", "abc"), ("  Bearer abc", "abc"), ("Bearer a b", "a b"),
            ("Bearer qmp_x", "qmp_x"), ("Bearer é", "é"),
            ("Bearer", nil), ("Bearer ", nil), ("Bearer \t ", nil), ("Bearerabc", nil), ("Bearer\tabc", nil), ("Basic abc", nil),
            ("Bearex abc", nil), ("", nil), ("B", nil), ("Token abc", nil), ("bearer@ abc", nil),
        ]
        for (header, token) in cases { #expect(GatewayAPI.bearer(header: header) == token, "\(header.debugDescription)") }
    }

    @Test func eddsaTokensAndKeyFormats() async throws {
        let priv = Curve25519.Signing.PrivateKey()
        let signing = try JWTKeyMaterial(eddsaPrivateKey: priv)
        let minter = try await TokenMinter(keys: signing)
        #expect(minter.algorithm == "EdDSA")
        let token = try await minter.user(tenantID: tenant, userID: user, role: .owner)

        // The public key as PEM and as base64url both verify; an HS256-only gateway refuses EdDSA.
        for text in [priv.publicKey.pemRepresentation,
                     priv.publicKey.rawRepresentation.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")] {
            let verifier = await TokenVerifier(keys: try JWTKeyMaterial(eddsaPublicKey: try JWTKeyMaterial.parsePublicKey(text)))
            #expect(try await verifier.verify(token) == .user(tenantID: tenant, userID: user, role: .owner, amr: []))
        }
        let hmacOnly = await TokenVerifier(keys: try JWTKeyMaterial(hmacSecret: testSecret))
        await #expect(throws: MeshError.unauthenticated("unsupported token algorithm")) { _ = try await hmacOnly.verify(token) }
        // Signed by another Ed25519 key.
        let other = await TokenVerifier(keys: try JWTKeyMaterial(eddsaPublicKey: Curve25519.Signing.PrivateKey().publicKey))
        await #expect(throws: MeshError.self) { _ = try await other.verify(token) }
        #expect(throws: MeshError.self) { _ = try JWTKeyMaterial.parsePublicKey("not a key") }
    }

    @Test func shortSecretsAreRefused() {
        #expect(throws: MeshError.self) { _ = try JWTKeyMaterial(hmacSecret: Array("short".utf8)) }
        #expect(throws: MeshError.self) { _ = try JWTKeyMaterial(hmacSecret: Array(repeating: 0x41, count: 31)) }
        #expect(throws: Never.self) { _ = try JWTKeyMaterial(hmacSecret: Array(repeating: 0x41, count: 32)) }
    }

    @Test func everyDomainErrorHasOneStatusAndCode() {
        let cases: [(MeshError, Int, String)] = [
            (.invalidArgument(field: "label", message: "m"), 400, "invalid_argument"),
            (.unauthenticated("m"), 401, "unauthenticated"),
            (.permissionDenied("m"), 403, "permission_denied"),
            (.quotaExceeded(plan: .pro, cap: 20), 403, "quota_exceeded"),
            (.notFound("m"), 404, "not_found"),
            (.alreadyExists("m"), 409, "already_exists"),
            (.conflict("m"), 409, "conflict"),
            (.poolExhausted("m"), 409, "pool_exhausted"),
            (.failedPrecondition("m"), 409, "failed_precondition"),
            (.rateLimited(retryAfterSeconds: 12), 429, "rate_limited"),
            (.internal("secret cause"), 500, "internal"),
            (.unavailable("m"), 503, "unavailable"),
            (.deadlineExceeded("m"), 504, "deadline_exceeded"),
        ]
        for (e, status, code) in cases {
            let api = APIError(e)
            #expect(Int(api.status.code) == status && api.code == code, "\(e)")
        }
        #expect(APIError(.internal("secret cause")).message == "internal error", "causes are never sent")
        #expect(APIError(.quotaExceeded(plan: .pro, cap: 20)).details == ["plan": .string("pro"), "cap": .int(20)])
        let limited = APIError(.rateLimited(retryAfterSeconds: 12)).response(requestID: "r1")
        #expect(limited.headers[.retryAfter] == "12")
        #expect(APIError.from(HTTPError(.notFound)).code == "not_found")
        #expect(APIError.from(HTTPError(.contentTooLarge)).code == "payload_too_large")
        #expect(APIError.from(CancellationError()).code == "internal")
    }

    @Test func jsonWriterEscapesAndNests() throws {
        struct Sample: JSONEncodable {
            func encode(to w: inout JSONWriter) {
                w.object { w in
                    w.key("s"); w.string("quote \" backslash \\ newline \n tab \t nul \u{0} bell \u{7} Zoë 🚀 </script>")
                    w.key("n"); w.null()
                    w.key("i"); w.int(-42)
                    w.key("u"); w.uint(UInt64.max)
                    w.key("b"); w.bool(false)
                    w.key("a"); w.array(["x", "y"])
                    w.key("o"); w.object { w in w.key("empty"); w.array([String]()) }
                }
            }
        }
        var w = JSONWriter()
        Sample().encode(to: &w)
        let parsed = try #require(try JSONSerialization.jsonObject(with: Data(w.bytes)) as? [String: Any])
        #expect(parsed["s"] as? String == "quote \" backslash \\ newline \n tab \t nul \u{0} bell \u{7} Zoë 🚀 </script>")
        #expect(parsed["n"] is NSNull && parsed["i"] as? Int == -42 && parsed["b"] as? Bool == false)
        #expect("\(parsed["u"]!)" == "\(UInt64.max)")
        #expect(parsed["a"] as? [String] == ["x", "y"] && (parsed["o"] as? [String: Any])?["empty"] as? [Any] != nil)
    }

    @Test func timestampsMatchFoundationsISO8601() {
        let style = Date.ISO8601FormatStyle(includingFractionalSeconds: true, timeZone: .gmt)
        var rng = SystemRandomNumberGenerator()
        // Fixed corners (epoch, before it, leap days, centuries, year 9999) and 20,000 random instants
        // from 1583 on: before the Gregorian reform Foundation switches to the Julian calendar, while
        // ISO 8601 (and we) stay proleptic Gregorian.
        var instants: [Int64] = [0, 1, 999, -1, -86_400_000, 951_782_400_000, 951_868_799_999, 4_107_542_400_000,
                                 1_795_000_000_123, 253_402_300_799_999, -12_212_553_600_000]
        for _ in 0..<20_000 { instants.append(Int64.random(in: -12_212_553_600_000...253_402_300_799_999, using: &rng)) }
        for ms in instants {
            // Foundation formats the Double and truncates its fraction (0.999 s prints as .998), so
            // the date and time to the second come from Foundation and the milliseconds are checked exactly.
            let (seconds, millis) = ms.quotientAndRemainder(dividingBy: 1000)
            let whole = millis < 0 ? seconds - 1 : seconds
            let foundation = style.format(Date(timeIntervalSince1970: Double(whole)))
            let expected = foundation.prefix(19) + "." + String(1000 + (millis + 1000) % 1000).dropFirst() + "Z"
            let ours = Timestamp.iso(ms: ms)
            if ours != expected {
                Issue.record("\(ms): \(ours) != Foundation's \(expected)")
                return
            }
        }
        #expect(Timestamp.iso(ms: 1_795_000_000_123) == "2026-11-18T11:06:40.123Z")
        #expect(Timestamp.iso(ms: -62_135_596_800_000) == "0001-01-01T00:00:00.000Z")
        #expect(Timestamp.isoOrNil(ms: 0) == nil)
    }

    @Test func jsonWriterCopiesPlainStringsVerbatim() throws {
        var w = JSONWriter()
        w.array(["plain", "", "ünïcödé 🚀", "tail\"", "\u{1f}"])
        #expect(String(decoding: w.bytes, as: UTF8.self) == #"["plain","","ünïcödé 🚀","tail\"","\u001f"]"#)
    }
}
