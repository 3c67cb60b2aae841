import Foundation
import MeshBus
import MeshBusAuth
import MeshClient
import MeshDomain
import MeshKeys
import MeshProto
import MeshTestSupport
import Synchronization
import Testing

/// Collects what a subscription delivers, from now on.
final class Collector: Sendable {
    private let state = Mutex<[BusMessage]>([])
    private let task = Mutex<Task<Void, Never>?>(nil)

    init(_ sub: BusSubscription) {
        let t = Task { for await m in sub { self.state.withLock { $0.append(m) } } }
        task.withLock { $0 = t }
    }

    var received: [BusMessage] { state.withLock { $0 } }

    /// Waits until a message matches, or the timeout passes (a bound on a regression, not a speed).
    func wait(timeout: Duration = .seconds(60), _ match: (BusMessage) -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if received.contains(where: match) { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return received.contains(where: match)
    }

    func stop() { task.withLock { $0?.cancel() } }
}

/// Collects a connection's asynchronous errors (permission violations arrive this way).
final class ErrorLog: Sendable {
    private let errors = Mutex<[String]>([])
    private let task = Mutex<Task<Void, Never>?>(nil)

    init(_ bus: BusConnection) {
        let stream = bus.asyncErrors()
        let t = Task { for await e in stream { self.errors.withLock { $0.append(e) } } }
        task.withLock { $0 = t }
    }

    var all: [String] { errors.withLock { $0 } }

    /// Whether the server reported a permission violation naming `subject` within the timeout (a
    /// bound on a regression, not a speed).
    func denied(_ subject: String, timeout: Duration = .seconds(30)) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        func seen() -> Bool { all.contains { $0.contains("Permissions Violation") && $0.contains("\"\(subject)\"") } }
        while ContinuousClock.now < deadline {
            if seen() { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return seen()
    }

    func stop() { task.withLock { $0?.cancel() } }
}

/// Milliseconds, for the figures.
func ms(_ d: Duration) -> String {
    String(format: "%.1f ms", Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15)
}

/// A process started during a test, to stop at the end.
final class ProcessBox: Sendable {
    let value = Mutex<ManagedProcess?>(nil)
}

/// A node registered through the bootstrap identity, with the key it made itself.
struct EnrolledNode {
    let registration: Mesh_V1_RegisterNodeResponse
    let key: NKeyPair
    var id: String { registration.node.id }
    var tenant: String { registration.node.tenantID }
}

/// Every line of the permission matrix (docs/security.md) against a real nats-server running the
/// `meshctl bus init` configuration with TLS, the real AllocatorSvc, ProvisionSvc and FanoutSvc
/// with their own credentials, and nodes with the credentials ProvisionSvc signed for them.
@Suite(.timeLimit(.minutes(10)), .serialized, .enabled(if: TestEnvironment.hasInfra, "needs nats-server and PostgreSQL"))
struct SecuredBusTests {
    static func enroll(_ cp: ControlPlane, admin: Mesh_V1_Caller, name: String, port: Int) async throws -> EnrolledNode {
        let sec = try #require(cp.security)
        let token = try await cp.client.createEnrollmentToken(caller: admin)
        let bus = try await sec.connect("enroll-\(name)", credentials: try BusCredentials.parseCreds(sec.setup.enrollCreds),
                                        inboxPrefix: BusPolicy.enrollInboxPrefix)
        let key = NKeyPair.generate(.user)
        var r = Mesh_V1_RegisterNodeRequest()
        r.enrollmentToken = token.token
        r.name = name
        r.publicKey = WireGuardKeyPair.generate().publicKey
        r.endpoint = "192.0.2.1:\(port)"
        r.listenPort = UInt32(port)
        r.busPublicKey = key.publicKey
        let reg = try await ProvisionClient(bus: bus).registerNode(r)
        await bus.close()
        return EnrolledNode(registration: reg, key: key)
    }

    static func connect(_ cp: ControlPlane, _ n: EnrolledNode) async throws -> BusConnection {
        try await #require(cp.security).connect("node-\(n.id.prefix(8))", credentials: .jwt(jwt: n.registration.busUserJwt, seed: n.key.seed),
                                                inboxPrefix: n.registration.inboxPrefix)
    }

    static func figure(_ line: String) {
        print("security figure: \(line)")
        let url = TestEnvironment.outputDir("security").appendingPathComponent("figures.txt")
        let text = ((try? String(contentsOf: url, encoding: .utf8)) ?? "") + line + "\n"
        try? text.write(to: url, atomically: true, encoding: .utf8)
    }

    @Test func permissionMatrixRevocationAndTLS() async throws {
        let cp = try await ControlPlane.start("secure", fanout: 1, secureBus: true, secureTLS: true)
        let gatewayProcess = ProcessBox()
        do {
            try await matrix(cp, gatewayProcess)
        } catch {
            await gatewayProcess.value.withLock { $0 }?.terminate()
            try? await cp.stop()
            throw error
        }
        if let gw = gatewayProcess.value.withLock({ $0 }) { try await gw.stopChecked() }
        try await cp.stop()
    }

    func matrix(_ cp: ControlPlane, _ gatewayProcess: ProcessBox) async throws {
        let sec = try #require(cp.security)

        let t1 = try await cp.tenant(.enterprise), t2 = try await cp.tenant(.enterprise)
        let admin1 = try await cp.user(t1, .admin), admin2 = try await cp.user(t2, .admin)

        // MARK: Registration: through the bootstrap identity, with the node's own key.
        let a = try await Self.enroll(cp, admin: admin1, name: "node-a", port: 51820)
        let b = try await Self.enroll(cp, admin: admin1, name: "node-b", port: 51821)
        let c = try await Self.enroll(cp, admin: admin2, name: "node-c", port: 51822)
        #expect(a.registration.inboxPrefix == "_INBOX.node.\(a.id)")
        #expect(a.registration.busCredentials.isEmpty, "the reply must hold nothing secret")
        let claims = try NatsJWT.decode(a.registration.busUserJwt)
        #expect(claims["sub"]?.stringValue == a.key.publicKey)
        #expect(claims["nats"]?["issuer_account"]?.stringValue == sec.setup.meshAccount.publicKey)
        #expect(claims["iss"]?.stringValue == sec.setup.accountSigningKey.publicKey)
        // Without its own key a node cannot register on the secured bus.
        let refused = await meshError {
            var r = Mesh_V1_RegisterNodeRequest()
            r.enrollmentToken = try await cp.client.createEnrollmentToken(caller: admin1).token
            r.name = "keyless"
            r.publicKey = WireGuardKeyPair.generate().publicKey
            r.endpoint = "192.0.2.9:51820"
            r.listenPort = 51820
            _ = try await cp.client.registerNode(r)
        }
        guard case .invalidArgument(let field, _)? = refused else {
            Issue.record("a registration without a bus key was not refused as invalid: \(String(describing: refused))")
            return
        }
        #expect(field == "bus_public_key")

        let busA = try await Self.connect(cp, a), busB = try await Self.connect(cp, b), busC = try await Self.connect(cp, c)
        let errorsA = ErrorLog(busA)
        let gateway = try await sec.connect(as: .gateway)
        let fanoutA = FanoutClient(bus: busA, timeout: .seconds(5))

        // MARK: What a node may do.
        let sync = try await fanoutA.sync(tenantID: t1.id, nodeID: a.id)
        #expect(sync.members.contains { $0.id == a.id })
        #expect(sync.members.contains { $0.id == b.id })
        #expect(try await fanoutA.revision(tenantID: t1.id) >= 1)

        let updatesA = Collector(try busA.subscribe(MeshSubjects.peersUpdated(tenant: t1.id)))
        let updatesB = Collector(try busB.subscribe(MeshSubjects.peersUpdated(tenant: t1.id)))
        let updatesC = Collector(try busC.subscribe(MeshSubjects.peersUpdated(tenant: t2.id)))
        // The node's control subjects, answered to the gateway (response permission), and discovery under its own id.
        let state = { () -> Mesh_V1_NodeState in
            var st = Mesh_V1_NodeState()
            st.nodeID = a.id
            st.tenantID = t1.id
            return st
        }()
        let service = try BusService(connection: busA, name: MeshServiceName.nodeApplier, id: a.id, version: MeshVersion.current,
                                     endpoints: [.proto("state", subject: MeshSubjects.nodeState(a.id)) { (_: Mesh_V1_NodeStateRequest, _) in state }],
                                     logger: TestEnvironment.logger("node-a"))
        let serviceTask = Task { try await service.run() }
        defer { serviceTask.cancel() }
        await service.waitUntilReady()
        try await busB.flush()
        try await busC.flush()
        let answered = try await NodeClient(bus: gateway, timeout: .seconds(60)).state(nodeID: a.id)
        #expect(answered.nodeID == a.id)
        let pings = try await ServiceProcesses.ping(bus: gateway, service: MeshServiceName.nodeApplier)
        #expect(pings.map(\.id) == [a.id])

        // A device in tenant 1 reaches tenant 1's nodes through FanoutSvc.
        let device = try await cp.client.createDevice(caller: admin1, label: "phone", type: .iphone)
        #expect(await updatesA.wait { m in (try? Mesh_V1_PeersUpdated(serializedBytes: m.payload))?.upserted?.id == device.device.id })
        #expect(await updatesB.wait { m in (try? Mesh_V1_PeersUpdated(serializedBytes: m.payload))?.upserted?.id == device.device.id })

        // A handshake report on the node's own subject reaches ProvisionSvc.
        var report = Mesh_V1_HandshakeReport()
        report.tenantID = t1.id
        report.nodeID = a.id
        var stat = Mesh_V1_PeerStats()
        stat.publicKey = device.device.publicKey
        stat.rxBytes = 4242
        stat.lastHandshakeMs = Int64(Date().timeIntervalSince1970 * 1000)
        report.peers = [stat]
        try busA.publish(MeshSubjects.handshakeReport(tenant: t1.id, node: a.id), try report.serializedBytes())
        try await waitUntil("ProvisionSvc applies the node's report") {
            try await cp.client.listDevices(caller: admin1).first { $0.id == device.device.id }?.rxBytes == 4242
        }
        #expect(errorsA.all.isEmpty, "the legitimate flows raised no permission error: \(errorsA.all)")

        // MARK: What a node may not do. Each line: the server reports the violation, and the effect is absent.
        // 1. Read another tenant's peer stream (exactly, by wildcard, or everything).
        // One at a time: nats.c keeps only the latest error text, so overlapping violations would blur.
        var spies: [(String, Collector)] = []
        for s in [MeshSubjects.peersUpdated(tenant: t2.id), "mesh.v1.peers.updated.*", ">"] {
            spies.append((s, Collector(try busA.subscribe(s))))
            #expect(await errorsA.denied(s), "subscribe \(s)")
        }
        let deviceT2 = try await cp.client.createDevice(caller: admin2, label: "laptop", type: .laptop)
        #expect(await updatesC.wait { m in (try? Mesh_V1_PeersUpdated(serializedBytes: m.payload))?.upserted?.id == deviceT2.device.id },
                "tenant 2's own node got the update (the control)")
        for (s, spy) in spies { #expect(spy.received.allSatisfy { !$0.subject.hasSuffix(t2.id) }, "\(s) leaked tenant 2's update") }

        // 2. Forge a peer update for its own tenant.
        var forged = Mesh_V1_PeersUpdated()
        forged.tenantID = t1.id
        forged.revision = 999_999
        let forgedBytes: [UInt8] = try forged.serializedBytes()
        try busA.publish(MeshSubjects.peersUpdated(tenant: t1.id), forgedBytes)
        #expect(await errorsA.denied(MeshSubjects.peersUpdated(tenant: t1.id)))
        // The server refused it before reporting the violation; a round trip on B's connection then
        // delivers anything the server had sent B before.
        try await busB.flush(timeout: .seconds(30))
        #expect(!updatesB.received.contains { $0.payload == forgedBytes }, "node B received a forged update")

        // 3. Serve (or queue-serve) the control plane's subjects: a request to a subject only the node
        //    subscribed to finds no responder.
        let canary = "x\(Nuid.short())"
        for (subject, queue) in [("mesh.v1.provision.>", nil), ("mesh.v1.provision.\(canary)", "q"), ("mesh.v1.allocator.>", "q"),
                                 ("mesh.v1.fanout.>", nil), (MeshSubjects.sync(tenant: t1.id, node: b.id), "q")] as [(String, String?)] {
            let stolen = Collector(try busA.subscribe(subject, queue: queue))
            #expect(await errorsA.denied(subject), "subscribe \(subject) queue \(queue ?? "-")")
            stolen.stop()
        }
        for subject in ["mesh.v1.provision.\(canary)", "mesh.v1.allocator.\(canary)", "mesh.v1.fanout.\(canary)"] {
            await #expect(throws: BusError.noResponders(subject: subject)) { _ = try await cp.bus.request(subject, [], timeout: .seconds(2)) }
        }
        // The real services still answer, and B's SyncFromCP goes to FanoutSvc, not to A.
        #expect(try await cp.client.listTenants().contains { $0.id == t1.id })
        #expect(try await FanoutClient(bus: busB).sync(tenantID: t1.id, nodeID: b.id).members.contains { $0.id == b.id })

        // 4. Request another node's peer list (same tenant or another), or another tenant's revision.
        for (tenant, node) in [(t1.id, b.id), (t2.id, c.id)] {
            let subject = MeshSubjects.sync(tenant: tenant, node: node)
            await #expect(throws: BusError.timeout(subject: subject)) { _ = try await busA.request(subject, [], timeout: .seconds(1)) }
            #expect(await errorsA.denied(subject))
        }
        await #expect(throws: BusError.timeout(subject: MeshSubjects.revision(tenant: t2.id))) {
            _ = try await busA.request(MeshSubjects.revision(tenant: t2.id), [], timeout: .seconds(1))
        }
        // On its own subjects, a body naming another node or tenant is refused by FanoutSvc.
        var otherSync = Mesh_V1_SyncRequest()
        otherSync.tenantID = t2.id
        otherSync.nodeID = c.id
        var otherRevision = Mesh_V1_RevisionRequest()
        otherRevision.tenantID = t2.id
        for (subject, body) in [(MeshSubjects.sync(tenant: t1.id, node: a.id), try otherSync.serializedBytes() as [UInt8]),
                                (MeshSubjects.revision(tenant: t1.id), try otherRevision.serializedBytes() as [UInt8])] {
            do {
                _ = try await busA.request(subject, body, timeout: .seconds(3))
                Issue.record("\(subject) answered a request for another tenant")
            } catch let BusError.service(code, _, _) {
                #expect(code == 403, "\(subject)")
            }
        }

        // 5. Read another node's inbox (its replies).
        var inboxSpies: [(String, Collector)] = []
        for s in ["_INBOX.node.\(b.id).>", "_INBOX.>", "_INBOX.*.*.*.*"] {
            inboxSpies.append((s, Collector(try busA.subscribe(s))))
            #expect(await errorsA.denied(s), "subscribe \(s)")
        }
        let bSync = try await FanoutClient(bus: busB).sync(tenantID: t1.id, nodeID: b.id)
        #expect(bSync.members.contains { $0.id == b.id })
        // B has its reply; a round trip on A's connection delivers anything the server sent A before.
        try await busA.flush(timeout: .seconds(30))
        for (s, spy) in inboxSpies { #expect(spy.received.isEmpty, "\(s) read \(spy.received.map(\.subject))") }

        // 6. Report for another node, or answer another node's control subjects.
        try busA.publish(MeshSubjects.handshakeReport(tenant: t1.id, node: b.id), try report.serializedBytes())
        #expect(await errorsA.denied(MeshSubjects.handshakeReport(tenant: t1.id, node: b.id)))
        let impostor = Collector(try busA.subscribe(MeshSubjects.nodeState(b.id), queue: "q"))
        #expect(await errorsA.denied(MeshSubjects.nodeState(b.id)))
        await #expect(throws: MeshError.self) { _ = try await NodeClient(bus: gateway, timeout: .seconds(1)).state(nodeID: b.id) }
        #expect(impostor.received.isEmpty)

        // 7. The bootstrap identity only registers; no credentials at all is no connection.
        let enrollBus = try await sec.connect("enroll-spy", credentials: try BusCredentials.parseCreds(sec.setup.enrollCreds),
                                              inboxPrefix: BusPolicy.enrollInboxPrefix)
        let enrollErrors = ErrorLog(enrollBus)
        await #expect(throws: BusError.timeout(subject: MeshSubjects.tenantList)) {
            _ = try await enrollBus.request(MeshSubjects.tenantList, [], timeout: .seconds(1))
        }
        #expect(await enrollErrors.denied(MeshSubjects.tenantList))
        let enrollSpy = try enrollBus.subscribe(MeshSubjects.peersUpdatedWildcard)
        #expect(await enrollErrors.denied(MeshSubjects.peersUpdatedWildcard))
        enrollSpy.unsubscribe()
        await enrollBus.close()
        await #expect(throws: BusError.self) { _ = try await sec.connect("anonymous", credentials: nil, retryOnFailedConnect: false) }

        // MARK: Services with their own credentials: FanoutSvc alone publishes peer updates.
        let provisionBus = try await sec.connect(as: .provision)
        let provisionErrors = ErrorLog(provisionBus)
        // The permission check needs a live connection: wait for it (a first attempt can fail and
        // be retried in the background), so a slow connect is not mistaken for a missing denial.
        try await waitUntil("the provision identity connects (errors: \(provisionErrors.all))") { provisionBus.isConnected }
        try provisionBus.publish(MeshSubjects.peersUpdated(tenant: t1.id), forgedBytes)
        #expect(await provisionErrors.denied(MeshSubjects.peersUpdated(tenant: t1.id)))
        let adminErrors = ErrorLog(cp.bus)
        try cp.bus.publish(MeshSubjects.peersUpdated(tenant: t1.id), forgedBytes)
        #expect(await adminErrors.denied(MeshSubjects.peersUpdated(tenant: t1.id)))
        try await busB.flush(timeout: .seconds(30))
        #expect(!updatesB.received.contains { $0.payload == forgedBytes })
        await provisionBus.close()

        // MARK: Transport: without TLS, or with a CA that did not sign the server, no connection.
        let plain = BusConfiguration(servers: [sec.url], name: "plain", credentials: try BusCredentials.parseCreds(sec.setup.serviceCreds[.admin]!),
                                     retryOnFailedConnect: false)
        await #expect(throws: BusError.self) { _ = try await BusConnection.connect(plain, logger: TestEnvironment.logger("plain")) }
        let otherCA = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("mesh-otherca-\(Nuid.short())")
        defer { try? FileManager.default.removeItem(at: otherCA) }
        await #expect(try run(TestEnvironment.repoRoot.appendingPathComponent("scripts/gen-certs.sh").path, [otherCA.path]).status == 0)
        var wrongCA = plain
        wrongCA.tls = BusTLS(caFile: otherCA.appendingPathComponent("ca.pem").path)
        await #expect(throws: BusError.self) { _ = try await BusConnection.connect(wrongCA, logger: TestEnvironment.logger("wrong-ca")) }

        // MARK: HTTPS on the gateway, over the secured bus with the gateway's own credentials.
        let certs = try #require(sec.certificates)
        let port = Int.random(in: 20000...60000)
        var env = sec.environment(for: .gateway)
        env["MESH_NATS_URL"] = sec.url
        env["MESH_GATEWAY_ADDRESS"] = "127.0.0.1:\(port)"
        env["MESH_GATEWAY_TLS_CERT"] = certs.appendingPathComponent("gateway.pem").path
        env["MESH_GATEWAY_TLS_KEY"] = certs.appendingPathComponent("gateway.key").path
        env["MESH_JWT_SECRET"] = String(repeating: "s", count: 40)
        env["MESH_INSTANCE"] = "gateway-tls"
        let gw = try ManagedProcess(name: "Gateway-tls-\(Nuid.short())", executable: TestEnvironment.binDir.appendingPathComponent("Gateway").path,
                                    environment: env, logDir: cp.logDir)
        gatewayProcess.value.withLock { $0 = gw }
        try await waitUntil("the gateway is ready over HTTPS", interval: .milliseconds(100)) {
            try gw.checkAlive()
            return try run("curl", ["-sS", "--max-time", "5", "--cacert", certs.appendingPathComponent("ca.pem").path,
                                    "https://127.0.0.1:\(port)/readyz"]).stdout.contains("\"ready\"")
        }
        let cleartext = try await run("curl", ["-sS", "--max-time", "2", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(port)/healthz"])
        #expect(cleartext.stdout != "200", "plain HTTP must not be served: \(cleartext.output)")
        let untrusted = try await run("curl", ["-sS", "--max-time", "2", "https://127.0.0.1:\(port)/healthz"])
        #expect(untrusted.status != 0, "a client without the CA refuses the certificate")

        // MARK: Revocation: removing node A cuts its connection; its credentials are refused afterwards.
        let events = busA.events()
        let cut = Task { () -> ContinuousClock.Instant? in
            for await e in events where e == .disconnected || e == .closed { return ContinuousClock.now }
            return nil
        }
        let start = ContinuousClock.now
        _ = try await cp.client.deregisterNode(caller: admin1, nodeID: a.id)
        let answeredAt = ContinuousClock.now
        // It happens (how fast is a figure: scripts/bench-latency.sh, docs/benchmarks.md).
        let cutAt = try await withDeadline(.seconds(60), "node A is disconnected after its removal") { await cut.value }
        cut.cancel()
        let cutAfter = try #require(cutAt, "node A's event stream ended without a disconnect") - start
        Self.figure("revocation: deregister request to node disconnected \(ms(cutAfter)), deregister reply after \(ms(answeredAt - start))")
        let again = BusConfiguration(servers: [sec.url], name: "revoked", inboxPrefix: a.registration.inboxPrefix,
                                     credentials: .jwt(jwt: a.registration.busUserJwt, seed: a.key.seed), tls: sec.clientTLS,
                                     retryOnFailedConnect: false)
        await #expect(throws: BusError.self) { _ = try await BusConnection.connect(again, logger: TestEnvironment.logger("revoked")) }
        // The other nodes are untouched.
        #expect(try await FanoutClient(bus: busB).sync(tenantID: t1.id, nodeID: b.id).members.contains { $0.id == b.id })
        #expect(try await FanoutClient(bus: busC).sync(tenantID: t2.id, nodeID: c.id).members.contains { $0.id == c.id })
        // The revocation survives the periodic re-push and a ProvisionSvc restart pushes it again.
        let revoked = try await cp.store.query("SELECT count(*) AS n FROM bus_revocations WHERE user_key = $1", a.key.publicKey)
        #expect(try revoked.first?.decode("n", as: Int.self) == 1)

        for col in [updatesA, updatesB, updatesC] { col.stop() }
        for (_, s) in spies + inboxSpies { s.stop() }
        errorsA.stop()
        await busB.close()
        await busC.close()
        await gateway.close()
    }
}
