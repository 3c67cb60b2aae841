import Foundation
import MeshBus
import MeshClient
import MeshDomain
import MeshProto
import MeshStore
import MeshTestSupport
import Testing

/// What the fault tests run besides the test servers.
let faultTestTools = ["wireguard-go", "wg", "wg-quick", "ip", "nft", "curl", "ping", "nats-server"]

/// Faults under a running mesh with real nodes (NodeApplier and wireguard-go in network namespaces):
/// PostgreSQL restarted, NATS restarted, and one node cut off from NATS. Every wait has a generous
/// deadline; how long recovery took is printed (and appended to `.test-output/faults/figures.txt`),
/// never asserted. docs/deployment.md records the figures.
@Suite(.timeLimit(.minutes(15)), .serialized,
       .enabled(if: TestEnvironment.runs(root: true, infra: true, tools: faultTestTools), "needs root, wireguard-go, nftables, nats-server and PostgreSQL"))
struct FaultTests {
    init() throws { try TestEnvironment.require(root: true, infra: true, tools: faultTestTools) }

    static func figure(_ line: String) {
        print("fault figure: \(line)")
        let url = TestEnvironment.outputDir("faults").appendingPathComponent("figures.txt")
        let text = ((try? String(contentsOf: url, encoding: .utf8)) ?? "") + line + "\n"
        try? text.write(to: url, atomically: true, encoding: .utf8)
    }

    /// PostgreSQL stopped under the running cluster: creating a device through the real gateway
    /// fails with 503 and writes nothing; nodes keep their interfaces and peers; once PostgreSQL is
    /// back, creations work again and every node converges.
    @Test func postgresRestartedUnderRunningNodes() async throws {
        let infra = try PrivateInfra(name: "pgfault")
        defer { infra.shutdown() }
        let lab = try await MeshLab.start("pgfault", databaseAdminURL: infra.databaseURL)
        let gateway = try await RealGateway.start(lab)
        do {
            try await postgresBody(lab, infra: infra, gateway: gateway)
        } catch {
            await gateway.process.terminate()
            try? await lab.stop()
            throw error
        }
        try await gateway.stop()
        try await lab.stop()
    }

    func postgresBody(_ lab: MeshLab, infra: PrivateInfra, gateway: RealGateway) async throws {
        let n1 = try await lab.addNode("pg-alpha")
        let n2 = try await lab.addNode("pg-beta")
        _ = try await lab.addDevice("before the outage")
        try await lab.waitConverged(timeout: .seconds(60))
        let created = try gateway.createDevice("through the gateway")
        #expect(created.status == 201, "a creation before the outage: \(created.status) \(created.body)")
        try await lab.waitConverged(timeout: .seconds(60))
        let before = try await DatabaseCounts.read(lab)
        let peersBefore = [n1.name: try lab.livePeers(n1), n2.name: try lab.livePeers(n2)]

        try infra.stopPostgres()
        // Creations fail cleanly: 503 with a JSON error, for every attempt.
        for i in 0..<3 {
            let r = try gateway.createDevice("during the outage \(i)")
            #expect(r.status == 503, "creation \(i) while PostgreSQL is down: \(r.status) \(r.body)")
            #expect(r.errorCode == "unavailable", "creation \(i): \(r.body)")
        }
        // The nodes keep their interfaces and peers, and the tunnel carries traffic.
        for n in [n1, n2] { #expect(try lab.livePeers(n) == peersBefore[n.name], "\(n.name) lost peers while PostgreSQL was down") }
        #expect(await lab.reaches(from: n1.ns, n2.node!.ipv4), "node to node over the tunnel while PostgreSQL is down")

        try infra.start()
        let back = ContinuousClock.now
        // The first creation that succeeds after PostgreSQL's return, then every node holding it.
        var firstOK: Duration?
        var last = (status: 0, body: "")
        while ContinuousClock.now - back < .seconds(60) {
            let r = try gateway.createDevice("after the outage")
            last = (r.status, r.body)
            if r.status == 201 { firstOK = ContinuousClock.now - back; break }
            #expect(r.status == 503, "a creation right after PostgreSQL's return: \(r.status) \(r.body)")
            try await Task.sleep(for: .milliseconds(100))
        }
        let ok = try #require(firstOK, "no creation succeeded within 60 s of PostgreSQL's return; last: \(last)")
        // The test's own pool (which reads the expected peers) lost its connections too; the first
        // query on each fails and the pool connects again on the next.
        for _ in 0..<50 {
            if (try? await lab.cp.store.query("SELECT 1")) != nil { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        try await lab.waitConverged(timeout: .seconds(60))
        let converged = ContinuousClock.now - back
        Self.figure("postgres restart: first creation ok \(ms(ok)) after PostgreSQL accepted connections again, every node converged after \(ms(converged))")

        // Nothing of the refused creations was written: one device more (the one after the
        // return), its audit entry and its outbox row, and no address or name held by nobody.
        let after = try await DatabaseCounts.read(lab)
        #expect(after.devices == before.devices + 1, "devices: \(before.devices) before, \(after.devices) after")
        #expect(after.outageDevices == 0, "a device of the outage exists")
        #expect(after.audit == before.audit + 1, "audit entries: \(before.audit) before, \(after.audit) after")
        #expect(after.outbox == before.outbox + 1, "outbox rows: \(before.outbox) before, \(after.outbox) after")
        #expect(after.orphanLeases == 0, "\(after.orphanLeases) addresses held by no device or node, and not being given back")
        #expect(after.orphanNames == 0, "\(after.orphanNames) names held by no device or node")
        // No service or node died on the way.
        for p in lab.cp.processes { #expect(p.isRunning, "\(p.name) exited: \(p.log().suffix(2000))") }
        for n in lab.nodes { #expect(n.process?.isRunning == true, "\(n.name) exited") }
        #expect(gateway.process.isRunning, "the gateway exited")
    }

    /// NATS killed and started again, then one node cut off from NATS by a firewall in its
    /// namespace: nodes keep their interfaces and peers throughout, converge after reconnecting,
    /// and a handshake the cut-off node saw during the outage reaches the control plane afterwards.
    /// On the secured bus (TLS and per-identity credentials), as `make up` runs it.
    @Test func natsRestartedAndPartitionedFromANode() async throws {
        let lab = try await MeshLab.start("natsfault", secureBus: true)
        do {
            try await natsBody(lab)
        } catch {
            try? await lab.stop()
            throw error
        }
        try await lab.stop()
    }

    func natsBody(_ lab: MeshLab) async throws {
        let n1 = try await lab.addNode("nf-alpha")
        let n2 = try await lab.addNode("nf-beta")
        _ = try await lab.addDevice("nats laptop")
        try await lab.waitConverged(timeout: .seconds(60))

        // MARK: NATS restarted.
        let peers = [n1.name: try lab.livePeers(n1), n2.name: try lab.livePeers(n2)]
        await lab.cp.nats.kill()
        try await Task.sleep(for: .seconds(2))
        for n in [n1, n2] { #expect(try lab.livePeers(n) == peers[n.name], "\(n.name) lost peers while NATS was down") }
        #expect(await lab.reaches(from: n1.ns, n2.node!.ipv4), "node to node over the tunnel while NATS is down")
        try lab.cp.nats.start()
        let restarted = ContinuousClock.now
        var made: Mesh_V1_Device?
        while made == nil && ContinuousClock.now - restarted < .seconds(60) {
            made = try? await lab.cp.client.createDevice(caller: lab.admin, label: "after the restart", type: .laptop).device
            if made == nil { try await Task.sleep(for: .milliseconds(100)) }
        }
        let createdAfter = ContinuousClock.now - restarted
        #expect(made != nil, "no device could be created within 60 s of NATS's return")
        try await lab.waitConverged(timeout: .seconds(60))
        Self.figure("nats restart: first creation ok \(ms(createdAfter)) after nats-server listened again, every node converged after \(ms(ContinuousClock.now - restarted))")

        // MARK: n1 cut off from NATS (TCP to and from the NATS port dropped in its namespace).
        // A device that n1 knows but that has never handshaken with it: it comes up during the cut.
        let late = try await lab.cp.client.createDevice(caller: lab.admin, label: "late laptop", type: .laptop)
        try await lab.waitConverged(timeout: .seconds(60))
        let peersBeforeCut = try lab.livePeers(n1)
        let disconnectsBefore = n1.process!.log().components(separatedBy: "bus disconnected").count
        try Partition.cut(n1, from: lab.cp.nats)
        var healed = false
        defer { if !healed { try? Partition.heal(n1) } }
        // Until nats.c notices (its pings go unanswered), then on: the node must not lose anything.
        let cutAt = ContinuousClock.now
        while n1.process!.log().components(separatedBy: "bus disconnected").count == disconnectsBefore {
            guard ContinuousClock.now - cutAt < .seconds(90) else { throw TestSetupError.failed("n1 never noticed the cut") }
            try await Task.sleep(for: .milliseconds(200))
        }
        let noticed = ContinuousClock.now - cutAt
        let during = try await lab.cp.client.createDevice(caller: lab.admin, label: "during the cut", type: .android)
        #expect(try lab.livePeers(n1) == peersBeforeCut, "n1 changed its peers while cut off")
        #expect(await lab.reaches(from: n1.ns, n2.node!.ipv4), "n1 still reaches n2 over the tunnel while cut off from NATS")
        // The late device handshakes with n1 now; n1 reports it into a bus it cannot reach.
        let tunnel = try lab.bringUp(config: late.config)
        _ = await lab.reaches(from: tunnel.ns, n1.node!.ipv4, count: 3, within: .zero)
        var handshook = false
        for _ in 0..<300 where !handshook {
            handshook = try await n1.ns.exec(["wg", "show", n1.interface, "latest-handshakes"]).split(separator: "\n")
                .contains { $0.hasPrefix(late.device.publicKey) && !$0.hasSuffix("\t0") }
            if !handshook { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(handshook, "the late device never handshook with n1")
        tunnel.ns.destroy()   // no traffic after this: only the report made during the cut can tell
        #expect(try await handshakeReported(lab, node: n1, key: late.device.publicKey) == false, "n1's report crossed the cut")

        try Partition.heal(n1)
        healed = true
        let healedAt = ContinuousClock.now
        try await lab.waitConverged(timeout: .seconds(60))
        let convergedAfter = ContinuousClock.now - healedAt
        #expect(try lab.livePeers(n1).contains(during.device.publicKey))
        var reportedAfter: Duration?
        while ContinuousClock.now - healedAt < .seconds(60) {
            if try await handshakeReported(lab, node: n1, key: late.device.publicKey) { reportedAfter = ContinuousClock.now - healedAt; break }
            try await Task.sleep(for: .milliseconds(100))
        }
        let reported = try #require(reportedAfter, "the handshake n1 saw while cut off never reached the control plane")
        Self.figure("nats partition of one node: noticed by the node after \(ms(noticed)); after the cut was lifted it converged in \(ms(convergedAfter)), its outage-time handshake report arrived after \(ms(reported))")
        for p in lab.cp.processes { #expect(p.isRunning, "\(p.name) exited: \(p.log().suffix(2000))") }
        for n in lab.nodes { #expect(n.process?.isRunning == true, "\(n.name) exited") }
    }

    /// The wireguard-go a node started (NodeApplier's default, `MESH_WG_USERSPACE_DAEMON=managed`)
    /// killed with SIGKILL takes the interface with it: NodeApplier notices and stops with an
    /// error; started again, as its supervisor would, it starts a new wireguard-go over the dead
    /// one's socket, sets the interface up again and syncs every peer.
    @Test func wireguardGoKilledUnderANode() async throws {
        let lab = try await MeshLab.start("wgkill")
        do {
            let n1 = try await lab.addNode("wk-alpha")
            let n2 = try await lab.addNode("wk-beta")
            _ = try await lab.addDevice("wgkill laptop")
            try await lab.waitConverged(timeout: .seconds(60))
            let daemons = try wireguardGoPids(n1)
            #expect(daemons.count == 1, "wireguard-go processes in \(n1.name)'s namespace: \(daemons)")
            let killed = ContinuousClock.now
            for pid in daemons { kill(pid, SIGKILL) }
            let process = try #require(n1.process)
            process.expectExit()   // what this test checks: it stops by itself
            while process.isRunning {
                guard ContinuousClock.now - killed < .seconds(60) else { throw TestSetupError.failed("NodeApplier kept running without its interface") }
                try await Task.sleep(for: .milliseconds(50))
            }
            let stopped = ContinuousClock.now - killed
            #expect(process.exitStatus != 0, "NodeApplier stopped with status 0 after losing its interface")
            #expect(process.log().contains("the interface was lost"), "NodeApplier did not say why it stopped")
            try lab.startNodeProcess(n1)
            _ = try await lab.waitForNode(n1.name)
            try await lab.waitConverged(timeout: .seconds(60))
            #expect(await lab.reaches(from: n1.ns, n2.node!.ipv4, count: 3), "the rebuilt interface carries traffic")
            #expect(try wireguardGoPids(n1).count == 1, "not exactly one wireguard-go after the restart")
            Self.figure("wireguard-go killed under a node: NodeApplier stopped after \(ms(stopped)); started again, it converged \(ms(ContinuousClock.now - killed)) after the kill")
        } catch {
            try? await lab.stop()
            throw error
        }
        try await lab.stop()
    }

    func wireguardGoPids(_ node: MeshLab.LabNode) throws -> [Int32] {
        try node.ns.exec(["ip", "netns", "pids", node.ns.name]).split(separator: "\n").compactMap { Int32($0) }.filter { pid in
            let cmd = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline"))) ?? Data()
            return String(decoding: cmd, as: UTF8.self).contains("wireguard-go")
        }
    }

    /// Whether ProvisionSvc recorded a handshake between `node` and the peer `key` (peer_stats).
    func handshakeReported(_ lab: MeshLab, node: MeshLab.LabNode, key: String) async throws -> Bool {
        let rows = try await lab.cp.store.query(
            "SELECT count(*)::int AS n FROM provision.peer_stats WHERE node_id = $1 AND public_key = $2 AND last_handshake_at IS NOT NULL",
            UUID(uuidString: node.node!.id)!, key)
        return try rows.first?.decode("n", as: Int.self) ?? 0 > 0
    }
}

/// Rows that tell whether anything was half-written.
struct DatabaseCounts {
    var devices = 0, outageDevices = 0, audit = 0, outbox = 0, orphanLeases = 0, orphanNames = 0

    static func read(_ lab: MeshLab) async throws -> DatabaseCounts {
        func count(_ sql: SQL) async throws -> Int {
            try await lab.cp.store.query(sql).first?.decode("n", as: Int.self) ?? -1
        }
        var c = DatabaseCounts()
        c.devices = try await count("SELECT count(*)::int AS n FROM provision.devices")
        c.outageDevices = try await count("SELECT count(*)::int AS n FROM provision.devices WHERE label LIKE 'during the outage%'")
        c.audit = try await count("SELECT count(*)::int AS n FROM provision.audit_log")
        c.outbox = try await count("SELECT count(*)::int AS n FROM provision.outbox")
        // An address held for an owner that does not exist, and that ProvisionSvc's lease keeper is not
        // about to give back (no lease task for it).
        c.orphanLeases = try await count("""
            SELECT count(*)::int AS n FROM allocator.leases l
              WHERE NOT EXISTS (SELECT 1 FROM provision.devices d WHERE d.id = l.owner_id)
                AND NOT EXISTS (SELECT 1 FROM provision.nodes n WHERE n.id = l.owner_id)
                AND NOT EXISTS (SELECT 1 FROM provision.lease_tasks t WHERE t.owner_id = l.owner_id)
            """)
        c.orphanNames = try await count("""
            SELECT count(*)::int AS n FROM provision.mesh_names m
              WHERE NOT EXISTS (SELECT 1 FROM provision.devices d WHERE d.id = m.owner_id)
                AND NOT EXISTS (SELECT 1 FROM provision.nodes n WHERE n.id = m.owner_id)
            """)
        return c
    }
}

/// Cuts a node off from NATS with nftables in its namespace (TCP to and from the NATS port is
/// dropped; WireGuard's UDP still flows), and lifts the cut.
enum Partition {
    static let table = "mesh_partition"

    static func cut(_ node: MeshLab.LabNode, from nats: TestNatsServer) throws {
        let host = String(nats.url.split(separator: "/").last!.split(separator: ":").first!)
        try node.ns.exec(["nft", "add", "table", "inet", table])
        try node.ns.exec(["nft", "add", "chain", "inet", table, "out", "{ type filter hook output priority 0 ; }"])
        try node.ns.exec(["nft", "add", "chain", "inet", table, "in", "{ type filter hook input priority 0 ; }"])
        try node.ns.exec(["nft", "add", "rule", "inet", table, "out", "ip", "daddr", host, "tcp", "dport", "\(nats.port)", "drop"])
        try node.ns.exec(["nft", "add", "rule", "inet", table, "in", "ip", "saddr", host, "tcp", "sport", "\(nats.port)", "drop"])
    }

    static func heal(_ node: MeshLab.LabNode) throws {
        try node.ns.exec(["nft", "delete", "table", "inet", table])
    }
}

/// The real Gateway executable in front of a lab's control plane, over plain HTTP on loopback,
/// with tokens minted by `meshctl token user` for the lab's admin.
struct RealGateway {
    let process: ManagedProcess
    let base: String
    let token: String

    static func start(_ lab: MeshLab) async throws -> RealGateway {
        let port = Int.random(in: 20000...60000)
        let secret = "fault-tests-secret-\(Nuid.next())"
        var env = lab.cp.security?.environment(for: .gateway) ?? [:]
        env["MESH_NATS_URL"] = lab.cp.nats.url
        env["MESH_GATEWAY_ADDRESS"] = "127.0.0.1:\(port)"
        env["MESH_JWT_SECRET"] = secret
        env["MESH_METRICS_ADDRESS"] = ""
        env["MESH_INSTANCE"] = "gateway-faults"
        let p = try ManagedProcess(name: "Gateway-\(Nuid.short())", executable: TestEnvironment.binDir.appendingPathComponent("Gateway").path,
                                   environment: env, logDir: lab.cp.logDir)
        let minted = try await run(TestEnvironment.binDir.appendingPathComponent("meshctl").path,
                             ["token", "user", "--tenant", lab.tenant.id, "--user", lab.admin.userID, "--role", "admin", "--ttl", "3600"],
                             environment: ["MESH_JWT_SECRET": secret])
        guard minted.status == 0 else { throw TestSetupError.failed("meshctl token user: \(minted.output)") }
        let g = RealGateway(process: p, base: "http://127.0.0.1:\(port)", token: minted.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
        let deadline = ContinuousClock.now + .seconds(60)
        while try g.request("GET", "/readyz").status != 200 {
            guard p.isRunning, ContinuousClock.now < deadline else { throw TestSetupError.failed("the gateway did not get ready: \(p.log().suffix(3000))") }
            try await Task.sleep(for: .milliseconds(200))
        }
        return g
    }

    struct Response {
        var status: Int
        var body: String
        var errorCode: String? {
            guard let json = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any] else { return nil }
            return (json["error"] as? [String: Any])?["code"] as? String
        }
    }

    /// One request with curl (status and body; a 30 s limit so that a hang fails instead of waiting).
    func request(_ method: String, _ path: String, json: String? = nil) throws -> Response {
        let bodyFile = NSTemporaryDirectory() + "mesh-gw-\(Nuid.next())"
        defer { unlink(bodyFile) }
        var args = ["curl", "-s", "-o", bodyFile, "-w", "%{http_code}", "--max-time", "30", "-X", method,
                    "-H", "Authorization: Bearer \(token)"]
        if let json { args += ["-H", "Content-Type: application/json", "--data", json] }
        let r = try run("/usr/bin/env", args + [base + path])
        return Response(status: Int(r.stdout) ?? 0, body: (try? String(contentsOfFile: bodyFile, encoding: .utf8)) ?? "")
    }

    func createDevice(_ label: String) throws -> Response {
        try request("POST", "/api/mesh/devices", json: "{\"label\":\"\(label)\",\"type\":\"laptop\"}")
    }

    /// Stops the gateway; it must have run all along and exit 0.
    func stop() async throws { try await process.stopChecked() }
}

/// A duration in milliseconds, for the printed figures.
func ms(_ d: Duration) -> String {
    let (s, atto) = d.components
    return String(format: "%.0f ms", Double(s) * 1000 + Double(atto) / 1e15)
}
