import Foundation
import Logging
import MeshBus
import MeshClient
import MeshDomain
import MeshKeys
import MeshProto
import MeshStore
import MeshTestSupport
import MeshWireGuard
import NodeApplierCore
import Synchronization
import Testing

/// The horizontally scaled control plane under mixed load and faults: three replicas of every
/// service, two nats-servers in a cluster, several tenants on every plan, many users, creates and
/// deletes at once; then one replica of each service is killed with SIGKILL and one nats-server is
/// restarted, mid-load. The invariants must hold throughout.
@Suite(.enabled(if: TestEnvironment.hasInfra, "\(TestEnvironment.skipReason)"), .serialized)
struct ScaledControlPlaneTests {
    final class Tally: Sendable {
        let counts = Mutex<[String: Int]>([:])
        let slowest = Mutex<Duration>(.zero)
        func add(_ key: String) { counts.withLock { $0[key, default: 0] += 1 } }
        func took(_ d: Duration) { slowest.withLock { $0 = max($0, d) } }
    }

    struct Workload {
        let tenants: [(Mesh_V1_Tenant, admin: Mesh_V1_Caller, users: [Mesh_V1_Caller])]
    }

    @Test func invariantsHoldUnderLoadAndFaults() async throws {
        let logger = TestEnvironment.logger("scaled")
        let cluster = try TestNatsCluster(size: 2)
        let db = try await TestDatabase.create(prefix: "scaled")
        let bus = try await TestEnvironment.connectBus("t-scaled", url: cluster.urls)
        let logDir = TestEnvironment.outputDir("scaled")
        var procs: [String: [ManagedProcess]] = [:]
        for svc in ["AllocatorSvc", "ProvisionSvc", "FanoutSvc"] {
            procs[svc] = try await ServiceProcesses.start(svc, count: 3, natsURL: cluster.urls, databaseURL: db.url,
                                                          environment: ["MESH_LOG_LEVEL": "info"], bus: bus, logDir: logDir)
        }
        let store = Store(StoreConfiguration(url: db.url, poolSize: 2, schema: TestDatabase.allSchemas), logger: logger)
        let client = ProvisionClient(bus: bus, timeout: .seconds(5))

        // Two tenants per plan, five users each (one admin).
        var tenants: [(Mesh_V1_Tenant, admin: Mesh_V1_Caller, users: [Mesh_V1_Caller])] = []
        for plan in [Mesh_V1_Plan.free, .pro, .team, .enterprise] {
            for k in 0..<2 {
                var tr = Mesh_V1_CreateTenantRequest()
                tr.name = "\(plan.key) \(k)"
                tr.plan = plan
                let t = try await client.createTenant(tr)
                var users: [Mesh_V1_Caller] = []
                for u in 0..<5 {
                    var ur = Mesh_V1_CreateUserRequest()
                    ur.tenantID = t.id
                    ur.name = "u\(u)"
                    ur.role = u == 0 ? .admin : .owner
                    let user = try await client.createUser(ur)
                    var c = Mesh_V1_Caller()
                    c.tenantID = t.id
                    c.userID = user.id
                    c.role = ur.role
                    users.append(c)
                }
                tenants.append((t, users[0], users))
            }
        }

        // Two simulated nodes in each of four tenants: the real agent logic (revision rules, SyncFromCP,
        // diff) on an in-memory interface, on their own bus connections to the cluster.
        var agents: [(NodeAgent, InMemoryWireGuard, tenant: String)] = []
        var agentTasks: [Task<Void, Never>] = []
        for (t, admin, _) in tenants where t.plan == .pro || t.plan == .enterprise {
            let token = try await client.createEnrollmentToken(caller: admin, maxUses: 2)
            for i in 0..<2 {
                var r = Mesh_V1_RegisterNodeRequest()
                r.enrollmentToken = token.token
                r.name = "node \(i)"
                r.publicKey = WireGuardKeyPair.generate().publicKey
                r.endpoint = "192.0.2.\(agents.count + 1):51820"
                r.listenPort = 51820
                let identity = NodeIdentity(registration: try await client.registerNode(r))
                let nodeBus = try await TestEnvironment.connectBus("node-\(agents.count)", url: cluster.urls)
                let wg = InMemoryWireGuard(devices: ["wg0"])
                let fanout = FanoutClient(bus: nodeBus)
                let agent = NodeAgent(identity: identity, interface: "wg0", backend: wg, logger: logger) { () async throws(MeshError) in
                    try await fanout.fullView(tenantID: identity.tenantID, nodeID: identity.nodeID)
                }
                let sub = try nodeBus.subscribe(MeshSubjects.peersUpdated(tenant: t.id))
                let events = nodeBus.events()
                agentTasks.append(Task { await agent.run() })
                agentTasks.append(Task { for await m in sub { if let u = try? Mesh_V1_PeersUpdated(serializedBytes: m.payload) { agent.submit(u) } } })
                agentTasks.append(Task { for await e in events where e == .reconnected { agent.requestSync(reason: "reconnected") } })
                // The periodic revision check a real node runs (every 30 s there; faster here).
                agentTasks.append(Task {
                    while !Task.isCancelled {
                        try? await Task.sleep(for: .milliseconds(500))
                        if let tip = try? await fanout.revision(tenantID: t.id), tip > agent.revision { agent.requestSync(reason: "behind") }
                    }
                })
                _ = try await agent.refresh(reason: "start")
                agents.append((agent, wg, t.id))
            }
        }

        let tally = Tally()
        // One user of each Enterprise tenant tries 7 creates: the rate limit (5 per minute) must hold exactly.
        let rateUsers = tenants.filter { $0.0.plan == .enterprise }.map { $0.users[4] }

        /// Creates with client-side retries for transient failures (a killed replica, a restarted server).
        @Sendable func create(_ caller: Mesh_V1_Caller, _ label: String) async -> Mesh_V1_Device? {
            for _ in 0..<6 {
                let start = ContinuousClock.now
                do {
                    let d = try await client.createDevice(caller: caller, label: label, type: .other).device
                    tally.took(ContinuousClock.now - start)
                    tally.add("create ok")
                    return d
                } catch {
                    tally.took(ContinuousClock.now - start)
                    tally.add("create \(error.code)")
                    switch error {
                    case .unavailable, .deadlineExceeded, .internal: try? await Task.sleep(for: .milliseconds(200))
                    default: return nil
                    }
                }
            }
            return nil
        }
        @Sendable func delete(_ caller: Mesh_V1_Caller, _ id: String) async {
            for _ in 0..<6 {
                let start = ContinuousClock.now
                do {
                    _ = try await client.deleteDevice(caller: caller, deviceID: id)
                    tally.took(ContinuousClock.now - start)
                    tally.add("delete ok")
                    return
                } catch {
                    tally.took(ContinuousClock.now - start)
                    tally.add("delete \(error.code)")
                    switch error {
                    case .unavailable, .deadlineExceeded, .internal: try? await Task.sleep(for: .milliseconds(200))
                    default: return
                    }
                }
            }
        }
        /// A burst of mixed load: every user creates and deletes concurrently.
        func load(_ round: Int) async {
            await withTaskGroup(of: Void.self) { group in
                for (t, _, users) in tenants {
                    for (ui, u) in users.enumerated() where !rateUsers.contains(u) {
                        group.addTask {
                            var mine: [String] = []
                            for i in 0..<3 {
                                if let d = await create(u, "r\(round) u\(ui) \(i) \(t.name)") { mine.append(d.id) }
                            }
                            if let first = mine.first { await delete(u, first) }
                        }
                    }
                }
                if round == 0 {
                    for u in rateUsers {
                        for i in 0..<7 { group.addTask { _ = await create(u, "rate \(i)") } }
                    }
                }
            }
        }
        /// Time until every simulated node holds exactly the database's peers.
        func converge() async throws -> Duration {
            let start = ContinuousClock.now
            while ContinuousClock.now - start < .seconds(30) {
                var ok = true
                for (agent, wg, tenant) in agents {
                    let live = Set(try await wg.device(named: "wg0").peers.map(\.publicKey.base64))
                    let rows = try await store.query("""
                        SELECT public_key FROM devices WHERE tenant_id = $1
                        UNION ALL SELECT public_key FROM nodes WHERE tenant_id = $1 AND id <> $2
                        """, UUID(uuidString: tenant)!, UUID(uuidString: agent.identity.nodeID)!)
                    if live != Set(try rows.map { try $0.decode("public_key", as: String.self) }) { ok = false; break }
                }
                if ok { return ContinuousClock.now - start }
                try await Task.sleep(for: .milliseconds(50))
            }
            throw TestSetupError.failed("simulated nodes did not converge within 30 s")
        }

        await load(0)
        let c0 = try await converge()
        // Fault 1: SIGKILL one replica of every service, mid-load.
        async let loaded: Void = load(1)
        try await Task.sleep(for: .milliseconds(300))
        for svc in ["AllocatorSvc", "ProvisionSvc", "FanoutSvc"] { await procs[svc]![0].kill9() }
        await loaded
        let c1 = try await converge()
        // Fault 2: restart one nats-server, mid-load.
        async let loaded2: Void = load(2)
        try await Task.sleep(for: .milliseconds(300))
        await cluster.kill(0)
        try await Task.sleep(for: .seconds(2))
        try cluster.start(0)
        await loaded2
        let c2 = try await converge()

        // Invariants, from the database.
        let dupes = try await store.query("SELECT count(*) AS n FROM (SELECT tenant_id, ipv4 FROM devices GROUP BY 1, 2 HAVING count(*) > 1) d").first!
        #expect(try dupes.decode("n", as: Int.self) == 0, "an address is handed out twice")
        let leaseDupes = try await store.query("SELECT count(*) - count(DISTINCT (tenant_id, host)) AS n FROM leases").first!
        #expect(try leaseDupes.decode("n", as: Int.self) == 0)
        for (t, _, _) in tenants {
            let tid = UUID(uuidString: t.id)!
            if let cap = t.plan.policy?.deviceCap {
                // Replay the audit log: the device count never exceeded the cap at any point.
                let log = try await store.query("SELECT action FROM audit_log WHERE tenant_id = $1 AND action LIKE 'device.%' ORDER BY id", tid)
                var n = 0, peak = 0
                for r in log {
                    let a: String = try r.decode("action")
                    if a == "device.create" { n += 1 } else if a == "device.delete" { n -= 1 }
                    peak = max(peak, n)
                }
                #expect(peak <= cap, "\(t.name): \(peak) devices at once, cap \(cap)")
            }
            // One audit entry per member change: every member change in the outbox has its audit entry
            // and vice versa (the other changes are the tenant's settings), and no revision is missing.
            let pair = try await store.query("""
                SELECT (SELECT count(*) FROM audit_log WHERE tenant_id = $1 AND action IN ('device.create', 'device.delete', 'node.register', 'node.deregister')) AS audited,
                       (SELECT revision FROM tenants WHERE id = $1) AS revision
                """, tid).first!
            let outbox = try await store.query("SELECT revision, payload FROM outbox WHERE tenant_id = $1 ORDER BY revision", tid)
            let changes = try outbox.map { try Mesh_V1_PeersUpdated(serializedBytes: try $0.decode("payload", as: ByteA.self).bytes) }
            let memberChanges = changes.filter { $0.upserted != nil || $0.removed != nil }.count
            #expect(try memberChanges == pair.decode("audited", as: Int.self), "\(t.name): audit and outbox disagree")
            #expect(try outbox.map { try $0.decode("revision", as: Int.self) } == Array(1...pair.decode("revision", as: Int.self)), "\(t.name): revision gap")
        }
        // The rate limit held exactly: 5 creations per user, even with retries across faults.
        for u in rateUsers {
            let made = try await store.query("SELECT count(*) AS n FROM audit_log WHERE actor = $1 AND action = 'device.create'", "user:\(u.userID)").first!
            let madeCount = try made.decode("n", as: Int.self)
            #expect(madeCount == 5, "rate-limited user made \(madeCount)")
        }
        #expect(tally.slowest.withLock { $0 } < .seconds(12), "a request hung")

        let counts = tally.counts.withLock { $0 }
        print("scaled control plane: requests \(counts.values.reduce(0, +)), by outcome \(counts.sorted { $0.key < $1.key })")
        print("scaled control plane: slowest request \(tally.slowest.withLock { $0 })")
        print("scaled control plane: nodes converged \(c0) after the first load, \(c1) after killing one replica of each service, \(c2) after restarting a nats-server")

        for t in agentTasks { t.cancel() }
        for (a, _, _) in agents { a.finish() }
        for list in procs.values { for p in list { await p.terminate() } }
        await bus.close()
        store.close()
        await db.drop()
        await cluster.stop()
    }
}
