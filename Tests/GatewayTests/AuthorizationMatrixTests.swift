import Foundation
import GatewayCore
import Hummingbird
import HummingbirdTesting
import MeshAuth
import MeshClient
import MeshDomain
import MeshKeys
import MeshProto
import MeshTestSupport
import Testing

/// The callers of the matrix, in column order.
enum Who: String, CaseIterable, Sendable {
    case none, expired, badSignature, algNone, ownerA, ownerB, admin, otherTenant, node, otherNode
    /// Another owner of the tenant, signed in: the session cookie, sent with this site's Origin.
    case cookieOwner
    /// The same cookie without an Origin (a cross-site request): refused on every state-changing route.
    case cookieNoOrigin
    /// Owner A's personal API token.
    case apiToken
}

extension GatewayTests {
    /// Every route × every kind of caller → the expected status.
    @Test func authorizationMatrix() async throws {
        let f = try await Fixture.start("matrix", environment: ["MESH_RATE_LIMIT": "0"])
        let sealer = try CookieSealer(secret: sessionSecret)
        let app = try await f.application(signIn: SignInConfiguration(publicURL: URL(string: signInPublicURL), sealer: sealer))
        // A signed-in owner of the tenant (a session as a sign-in opens it) and owner A's API token.
        var signIn = Mesh_V1_CreateSessionRequest()
        signIn.provider = "matrix"
        signIn.issuer = "https://idp.matrix.test"
        signIn.subject = "cookie-owner"
        signIn.name = "Cookie Owner"
        signIn.tenantID = f.tenant.id
        signIn.ttlSeconds = 3600
        let session = try await f.cp.client.createSession(signIn)
        let now = Int64(Date().timeIntervalSince1970)
        let cookie = sealer.seal(SessionCookie(sid: session.sessionID, uid: session.user.id, tid: session.user.tenantID, role: "owner", amr: [],
                                               provider: "matrix", iat: now, idle: now + 1800, max: now + 3600), purpose: .session)
        var rng = SystemRandomNumberGenerator()
        let apiToken = APITokenFormat.make(using: &rng)
        _ = try await f.cp.client.createAPIToken(caller: f.ownerA, name: "matrix", hash: SignInSecrets.tokenHash(apiToken),
                                                 prefix: APITokenFormat.displayPrefix(apiToken), ttlSeconds: 0)
        @Sendable func cookies(_ w: Who) -> [String: String] { w == .cookieOwner || w == .cookieNoOrigin ? [sessionCookieName: cookie] : [:] }
        @Sendable func headers(_ w: Who) -> HTTPFields { w == .cookieOwner ? [.origin: signInPublicURL] : [:] }
        @Sendable func token(_ w: Who) -> String? {
            switch w {
            case .none: nil
            case .expired: f.tokens.expired
            case .badSignature: f.tokens.badSignature
            case .algNone: f.tokens.algNone
            case .ownerA: f.tokens.ownerA
            case .ownerB: f.tokens.ownerB
            case .admin: f.tokens.admin
            case .otherTenant: f.tokens.otherAdmin
            case .node: f.tokens.node
            case .otherNode: f.tokens.otherNode
            case .cookieOwner, .cookieNoOrigin: nil
            case .apiToken: apiToken
            }
        }
        let unauth: [Who: Int] = [.none: 401, .expired: 401, .badSignature: 401, .algNone: 401]
        /// The new callers default to their kin: the cookie owner is another owner of the tenant (owner B),
        /// the API token is owner A; the cookie without Origin is refused wherever state changes.
        func row(_ rest: [Who: Int], unsafe: Bool = false) -> [Who: Int] {
            var r = unauth.merging(rest) { $1 }
            if r[.cookieOwner] == nil { r[.cookieOwner] = r[.ownerB] }
            if r[.apiToken] == nil { r[.apiToken] = r[.ownerA] }
            if r[.cookieNoOrigin] == nil { r[.cookieNoOrigin] = unsafe ? 403 : r[.cookieOwner] }
            return r
        }
        let create = row([.ownerA: 201, .ownerB: 201, .admin: 201, .otherTenant: 201, .node: 403, .otherNode: 403], unsafe: true)
        let delete = row([.ownerA: 204, .ownerB: 404, .admin: 204, .otherTenant: 404, .node: 403, .otherNode: 403], unsafe: true)
        let adminOnly = row([.ownerA: 403, .ownerB: 403, .admin: 200, .otherTenant: 404, .node: 403, .otherNode: 403])
        let anyUser = row([.ownerA: 200, .ownerB: 200, .admin: 200, .otherTenant: 200, .node: 403, .otherNode: 403])
        let tenantAdmin = row([.ownerA: 403, .ownerB: 403, .admin: 200, .otherTenant: 200, .node: 403, .otherNode: 403])
        let publicRoute = Dictionary(uniqueKeysWithValues: Who.allCases.map { ($0, 200) })

        // (method, path, expected); a path with {device} gets a fresh device of owner A per caller.
        let matrix: [(HTTPRequest.Method, String, [Who: Int])] = [
            (.get, "/api/mesh/state", row([.ownerA: 200, .ownerB: 200, .admin: 200, .otherTenant: 404, .node: 403, .otherNode: 403])),
            (.get, "/api/mesh/devices", anyUser),
            (.post, "/api/mesh/devices", create),
            (.delete, "/api/mesh/devices/{device}", delete),
            (.patch, "/api/mesh/devices/{device}", row([.ownerA: 200, .ownerB: 404, .admin: 200, .otherTenant: 404, .node: 403, .otherNode: 403],
                                                       unsafe: true)),
            (.post, "/api/mesh/devices/{device}/reissue", row([.ownerA: 200, .ownerB: 404, .admin: 200, .otherTenant: 404, .node: 403, .otherNode: 403],
                                                              unsafe: true)),
            (.patch, "/api/mesh/nodes/\(f.otherNode.id)", row([.ownerA: 403, .ownerB: 403, .admin: 200, .otherTenant: 404, .node: 403, .otherNode: 403],
                                                            unsafe: true)),
            (.post, "/api/mesh/refresh", row([.ownerA: 403, .ownerB: 403, .admin: 204, .otherTenant: 204, .node: 403, .otherNode: 403], unsafe: true)),
            (.get, "/api/mesh/peers", adminOnly),
            (.get, "/api/mesh/audit", tenantAdmin),
            (.get, "/api/license/orbit-features", anyUser),
            (.post, "/cp/api/v1/mesh/devices", create),
            (.delete, "/cp/api/v1/mesh/devices/{device}", delete),
            (.post, "/cp/api/v1/mesh/devices/{device}/reissue", row([.ownerA: 200, .ownerB: 404, .admin: 200, .otherTenant: 404, .node: 403, .otherNode: 403],
                                                                     unsafe: true)),
            (.get, "/cp/api/v1/mesh/peers/\(f.node.id)",
             row([.ownerA: 403, .ownerB: 403, .admin: 403, .otherTenant: 403, .node: 200, .otherNode: 404, .cookieOwner: 401, .cookieNoOrigin: 401])),
            // Users (admins of their own tenant), personal API tokens (every user, their own), who am I.
            (.get, "/api/auth/session", anyUser),
            (.get, "/api/mesh/users", tenantAdmin),
            (.post, "/api/mesh/users", row([.ownerA: 403, .ownerB: 403, .admin: 201, .otherTenant: 201, .node: 403, .otherNode: 403], unsafe: true)),
            (.patch, "/api/mesh/users/{user}", row([.ownerA: 403, .ownerB: 403, .admin: 200, .otherTenant: 404, .node: 403, .otherNode: 403], unsafe: true)),
            (.delete, "/api/mesh/users/{user}", row([.ownerA: 403, .ownerB: 403, .admin: 200, .otherTenant: 404, .node: 403, .otherNode: 403], unsafe: true)),
            (.get, "/api/mesh/tokens", anyUser),
            (.post, "/api/mesh/tokens", row([.ownerA: 201, .ownerB: 201, .admin: 201, .otherTenant: 201, .node: 403, .otherNode: 403], unsafe: true)),
            (.delete, "/api/mesh/tokens/{token}", delete),
            // Sign-in is public; here no provider is configured.
            (.get, "/api/auth/login?provider=corp", Dictionary(uniqueKeysWithValues: Who.allCases.map { ($0, 404) })),
            (.get, "/api/auth/callback?code=c&state=s", Dictionary(uniqueKeysWithValues: Who.allCases.map { ($0, 401) })),
            (.get, "/healthz", publicRoute),
            (.get, "/readyz", publicRoute),
            (.get, "/metrics", publicRoute),
            (.get, "/openapi.json", publicRoute),
            (.get, "/api/mesh/ui-config", publicRoute),
            (.get, "/vpn/mesh/", publicRoute),
            // Last: it ends the cookie owner's session.
            (.post, "/api/auth/logout", Dictionary(uniqueKeysWithValues: Who.allCases.map { ($0, $0 == .cookieNoOrigin ? 403 : 204) })),
        ]
        let mismatches = try await app.test(.router) { client in
            var mismatches: [String] = []
            for (method, path, expected) in matrix {
                for who in Who.allCases {
                    var uri = path
                    var deviceID: String?
                    if path.contains("{device}") {
                        let d = try await f.cp.client.createDevice(caller: f.ownerA, label: "victim", type: .laptop).device
                        deviceID = d.id
                        uri = path.replacingOccurrences(of: "{device}", with: d.id)
                    }
                    if path.contains("{user}") {
                        // A role change leaves owner B an owner; a removal takes a fresh user.
                        let id = method == .patch ? f.ownerB.userID : try await f.cp.user(f.tenant).userID
                        uri = path.replacingOccurrences(of: "{user}", with: id)
                    }
                    if path.contains("{token}") {
                        var rng = SystemRandomNumberGenerator()
                        let t = APITokenFormat.make(using: &rng)
                        let made = try await f.cp.client.createAPIToken(caller: f.ownerA, name: "victim", hash: SignInSecrets.tokenHash(t),
                                                                        prefix: APITokenFormat.displayPrefix(t), ttlSeconds: 0)
                        uri = path.replacingOccurrences(of: "{token}", with: made.id)
                    }
                    let body: String? = switch (method, path) {
                    case (.post, _) where path.hasSuffix("devices"): deviceBody("m \(who.rawValue)", type: "laptop")
                    case (.post, "/api/mesh/users"): #"{"email":"m-\#(who.rawValue)@example.com"}"#
                    case (.post, "/api/mesh/tokens"): #"{"name":"m \#(who.rawValue)"}"#
                    case (.patch, _) where path.contains("users"): #"{"role":"owner"}"#
                    case (.patch, _) where path.contains("/nodes/"): #"{"hub":true}"#
                    case (.patch, _): #"{"label":"renamed"}"#
                    default: nil
                    }
                    let r = try await client.send(method, uri, token: token(who), body: body, cookies: cookies(who), headers: headers(who))
                    let want = expected[who]!
                    if r.status != want { mismatches.append("\(method) \(path) as \(who): \(r.status), expected \(want): \(r.text.prefix(200))") }
                    if r.status >= 400 && path.hasPrefix("/api") || r.status >= 400 && path.hasPrefix("/cp") {
                        if r.errorCode == nil { mismatches.append("\(method) \(path) as \(who): error without a JSON error body: \(r.text.prefix(200))") }
                    }
                    if r.status == 401 && r.headers[.wwwAuthenticate] == nil && !path.hasPrefix("/api/auth/callback") { mismatches.append("\(method) \(path) as \(who): 401 without WWW-Authenticate") }
                    if r.headers[requestIDHeader] == nil { mismatches.append("\(method) \(path) as \(who): no X-Request-Id") }
                    // A refused delete leaves the device in place; an allowed one removes it.
                    if let deviceID {
                        let left = try await f.cp.client.listDevices(caller: f.admin).contains { $0.id == deviceID }
                        if left != (want != 204) { mismatches.append("\(method) \(path) as \(who): device present afterwards = \(left)") }
                    }
                }
            }

            // What each caller sees in the device list: owners their own, admins the tenant, nobody another tenant's.
            let a = try await client.send(.get, "/api/mesh/devices", token: f.tokens.ownerA).json["devices"] as? [[String: Any]] ?? []
            let all = try await client.send(.get, "/api/mesh/devices", token: f.tokens.admin).json["devices"] as? [[String: Any]] ?? []
            let other = try await client.send(.get, "/api/mesh/devices", token: f.tokens.otherAdmin).json["devices"] as? [[String: Any]] ?? []
            #expect(!a.isEmpty && a.allSatisfy { $0["owner_user_id"] as? String == f.ownerA.userID })
            #expect(all.count > a.count)
            #expect(Set(all.compactMap { $0["owner_user_id"] as? String }).isSubset(of: [f.ownerA.userID, f.ownerB.userID, f.admin.userID, session.user.id]))
            #expect(other.allSatisfy { $0["owner_user_id"] as? String == f.otherAdmin.userID })
            return mismatches
        }
        #expect(mismatches.isEmpty, "\(mismatches.count) mismatches:\n\(mismatches.joined(separator: "\n"))")
        await f.stop()
    }
}
