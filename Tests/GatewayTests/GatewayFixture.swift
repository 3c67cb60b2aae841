import Foundation
import GatewayCore
import Hummingbird
import HummingbirdTesting
import Logging
import MeshBus
import MeshClient
import MeshAuth
import MeshDomain
import MeshKeys
import MeshProto
import MeshTestSupport
import Synchronization
import Testing

/// Every gateway test, one at a time: each starts its own control plane (nats-server, database,
/// AllocatorSvc, ProvisionSvc), and the timing-sensitive ones (rate limits, deadlines) should not
/// compete for the two cores.
@Suite(.serialized, .enabled(if: TestEnvironment.hasInfra, "\(TestEnvironment.skipReason)"))
struct GatewayTests {}

/// The HS256 secret every test signs and verifies with.
let testSecret = Array("gateway-tests-secret-0123456789abcdef".utf8)

/// What a node's NodeApplier and FanoutSvc would answer, served in process: NodeApplier and
/// FanoutSvc are separate programs, and these tests are about the gateway.
final class FakeNodeServices: Sendable {
    let service: BusService
    let task: Task<Void, Never>
    /// The stand-in for FanoutSvc's ingest, when there is one.
    let ingest: Task<Void, Never>?
    let calls = Calls()

    /// What the fakes were asked.
    final class Calls: Sendable {
        /// Refresh calls seen, by node id.
        let refreshes = Mutex<[String]>([])
        /// Sync calls seen, as "tenant/node".
        let syncs = Mutex<[String]>([])
    }

    /// Serves state, peers and refresh for `nodes` (id → tenant), and SyncFromCP for them.
    init(bus: BusConnection, nodes: [String: String], stateDelay: Duration = .zero, serveSync: Bool = true,
         ingest: Task<Void, Never>? = nil) async throws {
        self.ingest = ingest
        let calls = self.calls
        var endpoints: [ServiceEndpoint] = []
        for (node, tenant) in nodes {
            endpoints.append(.proto("state-\(node.prefix(8))", subject: MeshSubjects.nodeState(node)) { (_: Mesh_V1_NodeStateRequest, _) in
                if stateDelay > .zero { try? await Task.sleep(for: stateDelay) }
                var s = Mesh_V1_NodeState()
                s.active = true
                s.listenPort = 51820
                s.peerCount = 2
                s.meshIp = "100.64.0.1"
                s.meshIpv6 = "fd00::1"
                s.nodeID = node
                s.tenantID = tenant
                s.interfaceName = "wg-quazzar0"
                s.backend = "userspace"
                s.revision = 7
                s.lastSyncMs = 1_700_000_000_000
                s.dnsStatus.serving = true
                s.dnsStatus.zone = "quazzar.mesh"
                s.dnsStatus.recordCount = 3
                s.dnsStatus.lastUpdateMs = 1_700_000_000_000
                s.dnsStatus.listen = ["100.64.0.1:53"]
                return s
            })
            endpoints.append(.proto("peers-\(node.prefix(8))", subject: MeshSubjects.nodePeers(node)) { (_: Mesh_V1_PeerDumpRequest, _) in
                var d = Mesh_V1_PeerDump()
                d.nodeID = node
                d.readAtMs = 1_700_000_000_000
                var p = Mesh_V1_PeerStats()
                p.publicKey = WireGuardKeyPair.generate().publicKey
                p.endpoint = "203.0.113.7:40000"
                p.lastHandshakeMs = 1_700_000_000_000
                p.rxBytes = 1234
                p.txBytes = 5678
                p.allowedIps = ["100.64.1.2/32", "fd00::1:2/128"]
                p.persistentKeepalive = 25
                p.peerID = UUID().uuidString.lowercased()
                p.dnsName = "phone.quazzar.mesh"
                d.peers = [p]
                return d
            })
            endpoints.append(.proto("refresh-\(node.prefix(8))", subject: MeshSubjects.nodeRefresh(node)) { (_: Mesh_V1_RefreshRequest, _) in
                calls.refreshes.withLock { $0.append(node) }
                var r = Mesh_V1_RefreshResponse()
                r.revision = 7
                return r
            })
        }
        if serveSync { endpoints.append(.proto("sync", subject: MeshSubjects.syncWildcard) { (r: Mesh_V1_SyncRequest, raw) in
            let parts = raw.subject.split(separator: ".")
            let tenant = String(parts[4]), node = String(parts[5])
            calls.syncs.withLock { $0.append("\(tenant)/\(node)") }
            guard nodes[node] == tenant, r.nodeID == node, r.tenantID == tenant else { throw MeshError.notFound("unknown node") }
            var s = Mesh_V1_SyncResponse()
            s.tenantID = tenant
            s.revision = 7
            s.settings.domain = "quazzar.mesh"
            s.settings.nodeKeepalive = 25
            s.settings.hubNodeID = node
            s.settings.ipv4Prefix = "100.64.0.0/16"
            s.settings.ipv6Prefix = "fd00::/48"
            s.settings.meshEnabled = true
            var me = Mesh_V1_Member()
            me.id = node
            me.kind = .node
            me.publicKey = WireGuardKeyPair.generate().publicKey
            me.ipv4 = "100.64.0.1"
            me.ipv6 = "fd00::1"
            me.slug = "edge"
            me.endpoint = "198.51.100.1:51820"
            me.active = true
            var d = Mesh_V1_Member()
            d.id = UUID().uuidString.lowercased()
            d.kind = .device
            d.publicKey = WireGuardKeyPair.generate().publicKey
            d.ipv4 = "100.64.1.2"
            d.ipv6 = "fd00::1:2"
            d.slug = "phone"
            d.active = true
            d.configHubID = node
            d.configNodeIds = [node]
            s.members = [me, d]
            return s
        }) }
        service = try BusService(connection: bus, name: "FakeNode", version: "1.0.0", endpoints: endpoints, logger: TestEnvironment.logger("fake"))
        let s = service
        task = Task { try? await s.run() }
        await service.waitUntilReady()
    }

    func stop() async {
        task.cancel()
        await task.value
        ingest?.cancel()
        await ingest?.value
    }

    /// Stands in for FanoutSvc's ingest when the fakes answer SyncFromCP: every change is taken, so
    /// ProvisionSvc's relay (and a registration waiting for it) goes on.
    static func ingest(bus: BusConnection) async throws -> (BusService, Task<Void, Never>) {
        let service = try BusService(connection: bus, name: "FakeFanout", version: "1.0.0", endpoints: [
            .proto("ingest", subject: MeshSubjects.fanoutIngest) { (r: Mesh_V1_IngestRequest, _) in
                var resp = Mesh_V1_IngestResponse()
                resp.revision = r.snapshot ? r.snapshotRevision : (r.changes.last?.revision ?? 0)
                return resp
            },
        ], logger: TestEnvironment.logger("fake"))
        let task = Task<Void, Never> { _ = try? await service.run() }
        await service.waitUntilReady()
        return (service, task)
    }
}

/// A control plane with two tenants, their users and nodes, fake node services, and tokens for
/// every kind of caller.
struct Fixture: Sendable {
    let cp: ControlPlane
    let tenant: Mesh_V1_Tenant
    let otherTenant: Mesh_V1_Tenant
    let ownerA: Mesh_V1_Caller
    let ownerB: Mesh_V1_Caller
    let admin: Mesh_V1_Caller
    let otherAdmin: Mesh_V1_Caller
    /// The gateway's node (in `tenant`) and another node of the same tenant.
    let node: Mesh_V1_Node
    let otherNode: Mesh_V1_Node
    let fakes: FakeNodeServices
    let minter: TokenMinter
    let tokens: Tokens
    let configuration: GatewayConfiguration

    struct Tokens: Sendable {
        var ownerA, ownerB, admin, otherAdmin, node, otherNode, expired, badSignature, algNone: String
    }

    /// `realFanout` starts a FanoutSvc process and leaves SyncFromCP to it.
    static func start(_ name: String, plan: Mesh_V1_Plan = .team, otherPlan: Mesh_V1_Plan = .team, environment: [String: String] = [:],
                      realFanout: Bool = false, configure: (inout GatewayConfiguration) -> Void = { _ in }) async throws -> Fixture {
        let cp = try await ControlPlane.start("gw-\(name)", fanout: realFanout ? 1 : 0, environment: environment)
        let ingest = realFanout ? nil : try await FakeNodeServices.ingest(bus: cp.bus)
        let t = try await cp.tenant(plan)
        let t2 = try await cp.tenant(otherPlan)
        let t2Admin = try await cp.user(t2, .admin)
        // Every tenant that takes devices needs a node.
        _ = try await cp.node(t2, admin: t2Admin, name: "other-edge", endpoint: "198.51.100.9:51820")
        let ownerA = try await cp.user(t), ownerB = try await cp.user(t), admin = try await cp.user(t, .admin)
        let otherAdmin = try await cp.user(t2, .admin)
        let (node, _) = try await cp.node(t, admin: admin, name: "edge-1", endpoint: "198.51.100.1:51820")
        let (otherNode, _) = try await cp.node(t, admin: admin, name: "edge-2", endpoint: "198.51.100.2:51820")
        let fakes = try await FakeNodeServices(bus: cp.bus, nodes: [node.id: t.id, otherNode.id: t.id], serveSync: !realFanout, ingest: ingest?.1)
        let minter = try await TokenMinter(keys: try JWTKeyMaterial(hmacSecret: testSecret))
        let wrong = try await TokenMinter(keys: try JWTKeyMaterial(hmacSecret: Array("another-secret-of-at-least-32-bytes!!".utf8)))
        func user(_ c: Mesh_V1_Caller) async throws -> String { try await minter.user(tenantID: c.tenantID, userID: c.userID, role: c.role) }
        let tokens = Tokens(
            ownerA: try await user(ownerA), ownerB: try await user(ownerB), admin: try await user(admin), otherAdmin: try await user(otherAdmin),
            node: try await minter.node(tenantID: t.id, nodeID: node.id), otherNode: try await minter.node(tenantID: t.id, nodeID: otherNode.id),
            expired: try await minter.user(tenantID: ownerA.tenantID, userID: ownerA.userID, role: .owner, ttl: .seconds(60),
                                           now: Date().addingTimeInterval(-3600)),
            badSignature: try await wrong.user(tenantID: ownerA.tenantID, userID: ownerA.userID, role: .owner),
            algNone: unsignedToken(tenant: t.id, user: admin.userID))
        var config = GatewayConfiguration(nodeID: node.id)
        configure(&config)
        return Fixture(cp: cp, tenant: t, otherTenant: t2, ownerA: ownerA, ownerB: ownerB, admin: admin, otherAdmin: otherAdmin, node: node,
                       otherNode: otherNode, fakes: fakes, minter: minter, tokens: tokens, configuration: config)
    }

    /// The in-process application (`app.test(.router)` sends requests straight to its router).
    func application(configuration: GatewayConfiguration? = nil, bus: BusConnection? = nil,
                     signIn: SignInConfiguration = SignInConfiguration()) async throws -> some ApplicationProtocol {
        let verifier = await TokenVerifier(keys: try JWTKeyMaterial(hmacSecret: testSecret))
        let api = GatewayAPI(configuration: configuration ?? self.configuration, bus: bus ?? cp.bus, verifier: verifier, signIn: signIn,
                             logger: TestEnvironment.logger("gateway"))
        return Application(router: GatewayApp.router(api: api), logger: TestEnvironment.logger("gateway"))
    }

    func stop() async {
        await fakes.stop()
        await cp.stop()
    }
}

/// A token with `alg: none` and no signature: must never be accepted.
func unsignedToken(tenant: String, user: String) -> String {
    func b64(_ s: String) -> String {
        Data(s.utf8).base64EncodedString().replacingOccurrences(of: "=", with: "").replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
    }
    let exp = Int(Date().timeIntervalSince1970) + 3600
    return b64(#"{"alg":"none","typ":"JWT"}"#) + "." + b64(#"{"sub":"\#(user)","tenant":"\#(tenant)","role":"admin","exp":\#(exp)}"#) + "."
}

/// A response, with its body parsed as JSON when it is JSON.
struct Reply: Sendable {
    let status: Int
    let headers: HTTPFields
    let text: String

    var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:] }

    /// The cookies the response sets: name → (value, attributes).
    var setCookies: [String: (value: String, attributes: String)] {
        var out: [String: (String, String)] = [:]
        for line in headers[values: .setCookie] {
            let first = line.split(separator: ";", maxSplits: 1).map(String.init)
            let nv = first[0].split(separator: "=", maxSplits: 1).map(String.init)
            out[nv[0]] = (nv.count > 1 ? nv[1] : "", first.count > 1 ? first[1] : "")
        }
        return out
    }
    var errorCode: String? { (json["error"] as? [String: Any])?["code"] as? String }
    var error: [String: Any] { json["error"] as? [String: Any] ?? [:] }
}

extension TestClientProtocol {
    /// Sends one request with an optional bearer token, cookies and body.
    func send(_ method: HTTPRequest.Method, _ uri: String, token: String? = nil, body: String? = nil, cookies: [String: String] = [:],
              headers extra: HTTPFields = [:]) async throws -> Reply {
        var headers = extra
        if let token { headers[.authorization] = "Bearer \(token)" }
        if !cookies.isEmpty { headers[.cookie] = cookies.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: "; ") }
        if body != nil { headers[.contentType] = "application/json" }
        let r = try await executeRequest(uri: uri, method: method, headers: headers, body: body.map { ByteBuffer(string: $0) })
        return Reply(status: Int(r.status.code), headers: r.headers, text: String(buffer: r.body))
    }
}

/// A device body.
func deviceBody(_ label: String, type: String? = nil) -> String {
    var o: [String: Any] = ["label": label]
    if let type { o["type"] = type }
    return String(decoding: try! JSONSerialization.data(withJSONObject: o), as: UTF8.self)
}
