import Foundation
import GatewayCore
import Hummingbird
import HummingbirdTesting
import MeshAuth
import MeshDomain
import MeshKeys
import MeshProto
import MeshTestSupport
import Testing

/// The callers of the matrix, in column order.
enum Who: String, CaseIterable, Sendable {
    case none, expired, badSignature, algNone, ownerA, ownerB, admin, otherTenant, node, otherNode
}

extension GatewayTests {
    /// Every route × every kind of caller → the expected status.
    @Test func authorizationMatrix() async throws {
        let f = try await Fixture.start("matrix", environment: ["MESH_RATE_LIMIT": "0"])
        let app = try await f.application()
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
            }
        }
        let unauth: [Who: Int] = [.none: 401, .expired: 401, .badSignature: 401, .algNone: 401]
        func row(_ rest: [Who: Int]) -> [Who: Int] { unauth.merging(rest) { $1 } }
        let create = row([.ownerA: 201, .ownerB: 201, .admin: 201, .otherTenant: 201, .node: 403, .otherNode: 403])
        let delete = row([.ownerA: 204, .ownerB: 404, .admin: 204, .otherTenant: 404, .node: 403, .otherNode: 403])
        let adminOnly = row([.ownerA: 403, .ownerB: 403, .admin: 200, .otherTenant: 404, .node: 403, .otherNode: 403])
        let anyUser = row([.ownerA: 200, .ownerB: 200, .admin: 200, .otherTenant: 200, .node: 403, .otherNode: 403])
        let publicRoute = Dictionary(uniqueKeysWithValues: Who.allCases.map { ($0, 200) })

        // (method, path, expected); a path with {device} gets a fresh device of owner A per caller.
        let matrix: [(HTTPRequest.Method, String, [Who: Int])] = [
            (.get, "/api/mesh/state", row([.ownerA: 200, .ownerB: 200, .admin: 200, .otherTenant: 404, .node: 403, .otherNode: 403])),
            (.get, "/api/mesh/devices", anyUser),
            (.post, "/api/mesh/devices", create),
            (.delete, "/api/mesh/devices/{device}", delete),
            (.patch, "/api/mesh/devices/{device}", row([.ownerA: 200, .ownerB: 404, .admin: 200, .otherTenant: 404, .node: 403, .otherNode: 403])),
            (.post, "/api/mesh/refresh", row([.ownerA: 403, .ownerB: 403, .admin: 204, .otherTenant: 204, .node: 403, .otherNode: 403])),
            (.get, "/api/mesh/peers", adminOnly),
            (.get, "/api/mesh/audit", row([.ownerA: 403, .ownerB: 403, .admin: 200, .otherTenant: 200, .node: 403, .otherNode: 403])),
            (.get, "/api/license/orbit-features", anyUser),
            (.post, "/cp/api/v1/mesh/devices", create),
            (.delete, "/cp/api/v1/mesh/devices/{device}", delete),
            (.get, "/cp/api/v1/mesh/peers/\(f.node.id)",
             row([.ownerA: 403, .ownerB: 403, .admin: 403, .otherTenant: 403, .node: 200, .otherNode: 404])),
            (.get, "/healthz", publicRoute),
            (.get, "/readyz", publicRoute),
            (.get, "/metrics", publicRoute),
            (.get, "/openapi.json", publicRoute),
            (.get, "/api/mesh/ui-config", publicRoute),
            (.get, "/vpn/mesh/", publicRoute),
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
                    let body = method == .post && path.hasSuffix("devices") ? deviceBody("m \(who.rawValue)", type: "laptop")
                        : method == .patch ? #"{"label":"renamed"}"# : nil
                    let r = try await client.send(method, uri, token: token(who), body: body)
                    let want = expected[who]!
                    if r.status != want { mismatches.append("\(method) \(path) as \(who): \(r.status), expected \(want): \(r.text.prefix(200))") }
                    if r.status >= 400 && path.hasPrefix("/api") || r.status >= 400 && path.hasPrefix("/cp") {
                        if r.errorCode == nil { mismatches.append("\(method) \(path) as \(who): error without a JSON error body: \(r.text.prefix(200))") }
                    }
                    if r.status == 401 && r.headers[.wwwAuthenticate] == nil { mismatches.append("\(method) \(path) as \(who): 401 without WWW-Authenticate") }
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
            #expect(Set(all.compactMap { $0["owner_user_id"] as? String }).isSubset(of: [f.ownerA.userID, f.ownerB.userID, f.admin.userID]))
            #expect(other.allSatisfy { $0["owner_user_id"] as? String == f.otherAdmin.userID })
            return mismatches
        }
        #expect(mismatches.isEmpty, "\(mismatches.count) mismatches:\n\(mismatches.joined(separator: "\n"))")
        try await f.stop()
    }
}
