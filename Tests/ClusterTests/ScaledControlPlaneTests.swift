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
/// restarted, mid-load. The invariants must hold throughout, and the work must get done: every
/// operation ends in success or in a domain answer (cap, rate limit), never in an internal error
/// and never lost to the faults; every replica serves its share.
@Suite(.timeLimit(.minutes(15)), .enabled(if: TestEnvironment.hasInfra, "\(TestEnvironment.skipReason)"), .serialized)
struct ScaledControlPlaneTests {
    /// Outcomes by round and kind ("r1 create ok", "r2 delete unavailable", ...), counted per attempt.
    final class Tally: Sendable {
        let counts = Mutex<[String: Int]>([:])
        let slowest = Mutex<Duration>(.zero)
        let finished = TestCounter()
        /// The first error message seen for each outcome, for the failure messages below.
        let messages = Mutex<[String: String]>([:])
        func add(_ key: String) { counts.withLock { $0[key, default: 0] += 1 } }
        func add(_ key: String, message: String) {
            add(key)
            messages.withLock { if $0[key] == nil { $0[key] = message } }
        }
        func took(_ d: Duration) { slowest.withLock { $0 = max($0, d) } }
        func count(_ key: String) -> Int { counts.withLock { $0[key] ?? 0 } }
        func total(where match: (String) -> Bool) -> Int { counts.withLock { $0.filter { match($0.key) }.values.reduce(0, +) } }
    }

    @Test func invariantsHoldUnderLoadAndFaults() async throws {
        let logger = TestEnvironment.logger("scaled")
        let cluster = try TestNatsCluster(size: 2)
        let db = try await TestDatabase.create(prefix: "scaled")
        let bus = try await TestEnvironment.connectBus("t-scaled", url: cluster.urls)
        let logDir = TestEnvironment.outputDir("scaled")
        // The rate window is an hour, so which creations it admits cannot depend on how long the
        // rounds take.
        let environment = ["MESH_LOG_LEVEL": "info", "MESH_RATE_WINDOW_SECONDS": "3600"]
        var procs: [String: [ManagedProcess]] = [:]
        for svc in ["AllocatorSvc", "ProvisionSvc", "FanoutSvc"] {
            procs[svc] = try await ServiceProcesses.start(svc, count: 3, natsURL: cluster.urls, databaseURL: db.url,
                                                          environment: environment, bus: bus, logDir: logDir)
        }
        let store = Store(StoreConfiguration(url: db.url, poolSize: 2, schema: TestDatabase.allSchemas), logger: logger)
        let client = ProvisionClient(bus: bus, timeout: .seconds(10))

        // Two tenants per plan, five users each (one admin).
        var tenants: [(Mesh_V1_Tenant, admin: Mesh_V1_Caller, users: [Mesh_V1_Caller])] = []
        @Sendable func makeUser(_ t: Mesh_V1_Tenant, _ name: String, _ role: Mesh_V1_Role) async throws -> Mesh_V1_Caller {
            var ur = Mesh_V1_CreateUserRequest()
            ur.tenantID = t.id
            ur.name = name
            ur.role = role
            let user = try await client.createUser(ur)
            var c = Mesh_V1_Caller()
            c.tenantID = t.id
            c.userID = user.id
            c.role = role
            return c
        }
        for plan in [Mesh_V1_Plan.free, .pro, .team, .enterprise] {
            for k in 0..<2 {
                var tr = Mesh_V1_CreateTenantRequest()
                tr.name = "\(plan.key) \(k)"
                tr.plan = plan
                let t = try await client.createTenant(tr)
                var users: [Mesh_V1_Caller] = []
                for u in 0..<5 { users.append(try await makeUser(t, "u\(u)", u == 0 ? .admin : .owner)) }
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
                    var lag = RevisionLag()
                    while !Task.isCancelled {
                        try? await Task.sleep(for: .milliseconds(500))
                        if let tip = try? await fanout.revision(tenantID: t.id), lag.check(tip: tip, applied: agent.revision) != nil {
                            agent.requestSync(reason: "behind")
                        }
                    }
                })
                _ = try await agent.refresh(reason: "start")
                agents.append((agent, wg, t.id))
            }
        }
        // The other tenants get a registered node too (no agent follows them): a device needs a node
        // to connect through, and creations in a tenant without one are refused.
        for (t, admin, _) in tenants where t.plan == .free || t.plan == .team {
            let token = try await client.createEnrollmentToken(caller: admin)
            var r = Mesh_V1_RegisterNodeRequest()
            r.enrollmentToken = token.token
            r.name = "edge"
            r.publicKey = WireGuardKeyPair.generate().publicKey
            r.endpoint = "198.51.100.\(tenants.firstIndex { $0.0.id == t.id }! + 1):51820"
            r.listenPort = 51820
            _ = try await client.registerNode(r)
        }

        let tally = Tally()
        // One user of each Enterprise tenant tries 7 creates: the rate limit (5 per window) must hold exactly.
        let rateUsers = tenants.filter { $0.0.plan == .enterprise }.map { $0.users[4] }

        /// Runs one operation until it gets an answer: a transient failure while a replica or a
        /// nats-server is down (no responder, no reply in time) is tried again, for up to 90 s; any
        /// other outcome is final. Every attempt's outcome is counted; an internal error is never
        /// retried (and fails the test below). `lost` tells whether an attempt went unanswered (its
        /// work may still have been done).
        @Sendable func attempt<T>(_ round: Int, _ kind: String, _ body: () async throws(MeshError) -> T) async -> (Result<T, MeshError>, lost: Bool) {
            let deadline = ContinuousClock.now + .seconds(90)
            var lost = false
            while true {
                let start = ContinuousClock.now
                do {
                    let v = try await body()
                    tally.took(ContinuousClock.now - start)
                    tally.add("r\(round) \(kind) ok")
                    return (.success(v), lost)
                } catch {
                    tally.took(ContinuousClock.now - start)
                    tally.add("r\(round) \(kind) \(error.code)", message: error.message)
                    let transient: Bool
                    switch error {
                    case .unavailable, .deadlineExceeded: transient = true
                    default: transient = false
                    }
                    guard transient, ContinuousClock.now < deadline else { return (.failure(error), lost) }
                    lost = true
                    try? await Task.sleep(for: .milliseconds(200))
                }
            }
        }
        @Sendable func create(_ round: Int, _ caller: Mesh_V1_Caller, _ label: String) async -> Result<Mesh_V1_Device, MeshError> {
            await attempt(round, "create") { () async throws(MeshError) in try await client.createDevice(caller: caller, label: label, type: .other).device }.0
        }
        /// A deletion whose first attempt went unanswered may have been done by it: `notFound` on the
        /// retry then means done.
        @Sendable func delete(_ round: Int, _ caller: Mesh_V1_Caller, _ id: String) async -> Result<Void, MeshError> {
            let (result, lost) = await attempt(round, "delete") { () async throws(MeshError) in _ = try await client.deleteDevice(caller: caller, deviceID: id) }
            if lost, case .failure(.notFound) = result { return .success(()) }
            return result
        }
        /// Final outcomes, by round, plan and operation ("r1 team create ok", "r2 free create quotaExceeded", ...).
        let finals = Tally()
        /// A burst of mixed load: fresh users (so each has its whole rate budget) each create two
        /// devices and delete the first, all at once. Two creations and the retries a lost reply can
        /// cause stay within the budget of five.
        let tenantList = tenants
        @Sendable func load(_ round: Int) async throws {
            var work: [(Mesh_V1_Tenant, Mesh_V1_Caller)] = []
            for (t, _, _) in tenantList {
                for u in 0..<4 { work.append((t, try await makeUser(t, "r\(round) u\(u)", .owner))) }
            }
            await withTaskGroup(of: Void.self) { group in
                for (t, u) in work {
                    group.addTask {
                        var mine: [String] = []
                        for i in 0..<2 {
                            switch await create(round, u, "r\(round) \(i) \(t.name)") {
                            case .success(let d):
                                mine.append(d.id)
                                finals.add("r\(round) \(t.plan.key) create ok")
                            case .failure(let e):
                                finals.add("r\(round) \(t.plan.key) create \(e.code)")
                            }
                            tally.finished.increment()
                        }
                        if let first = mine.first {
                            switch await delete(round, u, first) {
                            case .success: finals.add("r\(round) \(t.plan.key) delete ok")
                            case .failure(let e): finals.add("r\(round) \(t.plan.key) delete \(e.code)")
                            }
                            tally.finished.increment()
                        }
                    }
                }
                if round == 0 {
                    for u in rateUsers {
                        for i in 0..<7 {
                            group.addTask {
                                if case .failure(let e) = await create(round, u, "rate \(i)") { finals.add("rate create \(e.code)") } else { finals.add("rate create ok") }
                            }
                        }
                    }
                }
            }
        }
        /// Waits until every simulated node holds exactly the database's peers; returns how long it took.
        func converge() async throws -> Duration {
            let start = ContinuousClock.now
            try await waitUntil("every simulated node holds exactly the database's peers", timeout: .seconds(120)) {
                for (agent, wg, tenant) in agents {
                    let live = Set(try await wg.device(named: "wg0").peers.map(\.publicKey.base64))
                    let rows = try await store.query("""
                        SELECT public_key FROM devices WHERE tenant_id = $1
                        UNION ALL SELECT public_key FROM nodes WHERE tenant_id = $1 AND id <> $2
                        """, UUID(uuidString: tenant)!, UUID(uuidString: agent.identity.nodeID)!)
                    if live != Set(try rows.map { try $0.decode("public_key", as: String.self) }) { return false }
                }
                return true
            }
            return ContinuousClock.now - start
        }
        func instances(_ svc: String) -> Set<String> { Set((0..<3).map { "\(svc.lowercased())-\($0)" }) }
        func served(_ svc: String, _ name: String, _ endpoint: String, among: Set<String>) async throws -> [String: Int] {
            try await ServiceProcesses.requestsServed(bus: bus, service: name, endpoint: endpoint, instances: among)
        }

        try await load(0)
        let c0 = try await converge()
        // Before the faults, every replica of every service took part.
        var before: [String: [String: Int]] = [:]
        for (svc, name, endpoint) in [("AllocatorSvc", MeshServiceName.allocator, "allocate"), ("ProvisionSvc", MeshServiceName.provision, "device-create"),
                                      ("FanoutSvc", MeshServiceName.fanout, "revision")] {
            // (FanoutSvc's revision requests come from the nodes' periodic checks, so its counts grow on their own.)
            before[svc] = try await waitFor("every \(svc) replica has served \(endpoint)", timeout: .seconds(60), interval: .milliseconds(500)) {
                let counts = try await served(svc, name, endpoint, among: instances(svc))
                return instances(svc).allSatisfy { (counts[$0] ?? 0) > 0 } ? counts : nil
            }
        }

        // Fault 1: SIGKILL one replica of every service, mid-load (once some of the round is done).
        var progress = tally.finished.value
        async let loaded: Void = load(1)
        try await waitUntil("the second round under way") { tally.finished.value >= progress + 10 }
        for svc in ["AllocatorSvc", "ProvisionSvc", "FanoutSvc"] { await procs[svc]![0].kill9() }
        try await loaded
        let c1 = try await converge()
        // Fault 2: restart one nats-server, mid-load; it stays down while work goes on without it.
        progress = tally.finished.value
        async let loaded2: Void = load(2)
        try await waitUntil("the third round under way") { tally.finished.value >= progress + 10 }
        await cluster.kill(0)
        let down = tally.finished.value
        try await waitUntil("work goes on while a nats-server is down") { tally.finished.value >= down + 10 }
        try cluster.start(0)
        try await loaded2
        let c2 = try await converge()

        // The surviving replicas kept serving after the faults.
        let survivors = ["AllocatorSvc": "allocate", "ProvisionSvc": "device-create", "FanoutSvc": "revision"]
        let names = ["AllocatorSvc": MeshServiceName.allocator, "ProvisionSvc": MeshServiceName.provision, "FanoutSvc": MeshServiceName.fanout]
        for (svc, endpoint) in survivors {
            let alive = instances(svc).subtracting(["\(svc.lowercased())-0"])
            let after = try await served(svc, names[svc]!, endpoint, among: alive)
            for i in alive {
                #expect((after[i] ?? 0) > (before[svc]?[i] ?? 0), "\(i) served nothing after the faults: before \(before[svc] ?? [:]), after \(after)")
            }
        }

        // The work got done. No attempt ever ended in an internal error, and every operation ended
        // in success or a domain answer: none was lost to the faults.
        let attempts = tally.counts.withLock { $0 }
        let outcomes = finals.counts.withLock { $0 }
        let internalError = " \(Mesh_V1_ErrorCode.internal)"
        let messages = tally.messages.withLock { $0 }
        #expect(tally.total { $0.hasSuffix(internalError) } == 0,
                "internal errors: \(attempts.filter { $0.key.hasSuffix(internalError) }), first messages: \(messages.filter { $0.key.hasSuffix(internalError) })")
        let allowed: Set<String> = ["ok", "\(Mesh_V1_ErrorCode.quotaExceeded)", "\(Mesh_V1_ErrorCode.rateLimited)"]
        let unexpected = outcomes.filter { !allowed.contains(String($0.key.split(separator: " ").last!)) }
        #expect(unexpected.isEmpty, "operations that ended without an answer: \(unexpected); attempts' first messages: \(messages)")
        // Team and Enterprise users (caps not reached, budgets not spent) got every creation and
        // every deletion done, in every round, faults or not: 2 tenants × 4 users × 2 creations.
        for round in 0..<3 {
            for plan in ["team", "enterprise"] {
                #expect(finals.count("r\(round) \(plan) create ok") == 16, "round \(round), \(plan): \(outcomes.filter { $0.key.hasPrefix("r\(round) \(plan)") })")
                #expect(finals.count("r\(round) \(plan) delete ok") == 8, "round \(round), \(plan): \(outcomes.filter { $0.key.hasPrefix("r\(round) \(plan)") })")
            }
        }
        // Two users, seven creations each: five each get through.
        #expect(finals.count("rate create ok") == 10 && finals.count("rate create \(Mesh_V1_ErrorCode.rateLimited)") == 4,
                "rate-limited users: \(outcomes.filter { $0.key.hasPrefix("rate") })")

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
        print("scaled control plane: attempts \(attempts.values.reduce(0, +)), by round and outcome \(attempts.sorted { $0.key < $1.key })")
        print("scaled control plane: operations by round, plan and final outcome \(outcomes.sorted { $0.key < $1.key })")
        print("scaled control plane: slowest request \(tally.slowest.withLock { $0 })")
        print("scaled control plane: nodes converged \(c0) after the first load, \(c1) after killing one replica of each service, \(c2) after restarting a nats-server")

        for t in agentTasks { t.cancel() }
        for (a, _, _) in agents { a.finish() }
        try await stopChecked(procs.values.flatMap { $0 })
        await bus.close()
        store.close()
        await db.drop()
        await cluster.stop()
    }
}
