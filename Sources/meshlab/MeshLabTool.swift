import Foundation
import MeshBus
import MeshAuth
import MeshDomain
import MeshProto
import MeshTestSupport
import Synchronization

/// `meshlab`: a whole Quazzar Mesh on this machine, for tests written outside Swift (the browser
/// test, `Tests/browser`). It starts the lab (private nats-server and database, the real
/// AllocatorSvc, ProvisionSvc and FanoutSvc, one node running the real NodeApplier with
/// wireguard-go in a network namespace), four tenants (Pro with the node, Free, Pro with 16
/// registered nodes whose device configs are too large for a QR code, and Team with 30 devices of
/// six owners, for pages and the audit log) and two real Gateway processes (with and without a
/// Pritunl VPN configured; the plain one also signs people in through the test OpenID Connect
/// provider, `Tests/oidc/test_provider.py`), prints one JSON line with
/// everything a test needs, then answers line commands on stdin with one JSON line each:
///
///     device-up <path>                 bring up the wg-quick config in that file in a new namespace
///     handshake-report <key> [secs]    wait for the node's first handshake report naming that public key
///     node-peers                       the public keys the node's WireGuard interface holds now
///     extra-node <name>                register a node (no NodeApplier) in the Pro tenant
///     remove-node <id>                 remove a node of the Pro tenant
///     quit                             stop everything and exit 0 (also on end of input, SIGINT, SIGTERM)
///
/// Needs root, and `MESH_DATABASE_URL` (an admin URL of a PostgreSQL server); the executables are
/// taken from `.build/debug` (or `MESH_BIN_DIR`). Settings: `MESH_LAB_RATE_LIMIT` (creations per user
/// and window, default 5) and `MESH_LAB_RATE_WINDOW_SECONDS` (default 300).
@main
enum MeshLabTool {
    static func main() async {
        do {
            try await runLab()
            exit(0)
        } catch {
            emit(["event": "error", "error": "\(error)"])
            FileHandle.standardError.write(Data("meshlab: \(error)\n".utf8))
            exit(1)
        }
    }

    static func runLab() async throws {
        let env = ProcessInfo.processInfo.environment
        let rateLimit = env["MESH_LAB_RATE_LIMIT"] ?? "5"
        let rateWindow = env["MESH_LAB_RATE_WINDOW_SECONDS"] ?? "300"
        let commands = CommandInput.start()

        let lab = try await MeshLab.start("web", plan: .pro, environment: [
            "MESH_RATE_LIMIT": rateLimit, "MESH_RATE_WINDOW_SECONDS": rateWindow, "MESH_LOG_LEVEL": "info",
        ])
        var gateways: [ManagedProcess] = []
        var identityProvider: TestIdentityProvider?
        do {
            let node = try await lab.addNode("edge-1")
            guard let registered = node.node else { throw TestSetupError.failed("node edge-1 did not register") }
            let owner = try await lab.cp.user(lab.tenant, .owner)
            let freeTenant = try await lab.cp.readyTenant(.free)
            let freeOwner = try await lab.cp.user(freeTenant, .owner)
            // A tenant with 16 registered nodes (registrations only, no NodeApplier): its device
            // configs are too large for a QR code. The endpoints are loopback; nothing dials them.
            let bigTenant = try await lab.cp.tenant(.pro)
            let bigAdmin = try await lab.cp.user(bigTenant, .admin)
            var listAll = Mesh_V1_UpdateTenantRequest()
            listAll.tenantID = bigTenant.id
            listAll.settings.configMaxNodes = 16
            _ = try await lab.cp.client.updateTenant(listAll)
            let bigOwner = try await lab.cp.user(bigTenant, .owner)
            for i in 0..<16 {
                _ = try await lab.cp.node(bigTenant, admin: bigAdmin, name: "big-\(i)", endpoint: "127.0.0.1:\(52000 + i)")
            }
            // A Team tenant with 30 devices of six owners (the rate limit allows five each): pages,
            // filters and the audit log. Its node is a registration only.
            let teamTenant = try await lab.cp.readyTenant(.team)
            let teamAdmin = try await lab.cp.user(teamTenant, .admin)
            let types: [Mesh_V1_DeviceType] = [.iphone, .android, .laptop, .other]
            for o in 0..<6 {
                let owner = try await lab.cp.user(teamTenant, .owner)
                for i in 0..<5 {
                    _ = try await lab.cp.client.createDevice(caller: owner, label: "Team device \(o * 5 + i + 1)", type: types[(o * 5 + i) % 4])
                }
            }

            let reports = HandshakeReports()
            let subscription = try lab.cp.bus.subscribe(MeshSubjects.handshakeReportWildcard)
            let recorder = Task {
                for await message in subscription {
                    if let report = try? Mesh_V1_HandshakeReport(serializedBytes: message.payload) { reports.record(report) }
                }
            }
            defer { recorder.cancel() }

            var secretBytes = [UInt8](repeating: 0, count: 32)
            for i in secretBytes.indices { secretBytes[i] = UInt8.random(in: 0...255) }
            let secret = secretBytes.map { String(format: "%02x", $0) }.joined()
            let minter = try await TokenMinter(keys: JWTKeyMaterial(hmacSecret: Array(secret.utf8)))
            func token(_ c: Mesh_V1_Caller) async throws -> String {
                try await minter.user(tenantID: c.tenantID, userID: c.userID, role: c.role, ttl: .seconds(3600))
            }

            let logDir = TestEnvironment.outputDir("browser/lab")
            let ports = [try freeLoopbackPort(), try freeLoopbackPort()]
            let urls = ports.map { "http://127.0.0.1:\($0)" }
            // The identity provider people sign in with on the plain gateway: Ada, an admin of the Pro
            // tenant by its tenant and group claims.
            let adaPassword = "ada-" + Nuid.short()
            let idp = try await TestIdentityProvider(
                name: "browser", redirectURI: urls[1] + "/api/auth/callback",
                users: [TestIdentityProvider.User("ada", password: adaPassword, claims: [
                    "name": "Ada Lovelace", "email": "ada@example.com", "email_verified": true, "mesh_tenant": lab.tenant.id, "groups": ["mesh-admins"],
                ])], logDir: logDir)
            identityProvider = idp
            let secretFile = logDir.appendingPathComponent("idp-client-secret")
            try Data(idp.clientSecret.utf8).write(to: secretFile)
            let providers = #"[{"id":"idp","name":"Test IdP","issuer":"\#(idp.issuer)","client_id":"\#(idp.clientID)","client_secret_file":"\#(secretFile.path)","tenant_claim":"mesh_tenant","admin_claim":"groups=mesh-admins"}]"#
            var sessionBytes = [UInt8](repeating: 0, count: 32)
            for i in sessionBytes.indices { sessionBytes[i] = UInt8.random(in: 0...255) }
            let sessionSecret = sessionBytes.map { String(format: "%02x", $0) }.joined()
            for (i, pritunl) in [true, false].enumerated() {
                let name = pritunl ? "gateway-pritunl" : "gateway-plain"
                var environment = ["MESH_NATS_URL": lab.cp.nats.url, "MESH_GATEWAY_ADDRESS": "127.0.0.1:\(ports[i])",
                                   "MESH_GATEWAY_NODE_ID": registered.id, "MESH_JWT_SECRET": secret, "MESH_JWT_SECRET_FILE": "",
                                   "MESH_PRITUNL_CONFIGURED": pritunl ? "true" : "false", "MESH_INSTANCE": name, "MESH_LOG_LEVEL": "info"]
                if !pritunl {
                    environment["MESH_OIDC_PROVIDERS"] = providers
                    environment["MESH_GATEWAY_PUBLIC_URL"] = urls[i]
                    environment["MESH_SESSION_SECRET"] = sessionSecret
                }
                gateways.append(try ManagedProcess(name: name, executable: TestEnvironment.binDir.appendingPathComponent("Gateway").path,
                                                   environment: environment, logDir: logDir))
            }
            for (url, process) in zip(urls, gateways) { try await waitReady(url, process) }

            emit([
                "event": "ready",
                "gateway": urls[0], "plain_gateway": urls[1],
                "gateway_logs": gateways.map(\.logFile.path),
                "tokens": ["owner": try await token(owner), "admin": try await token(lab.admin), "free_owner": try await token(freeOwner),
                           "big_owner": try await token(bigOwner), "team_admin": try await token(teamAdmin)],
                "team_tenant": ["id": teamTenant.id, "plan": "team", "devices": 30],
                "tenant": ["id": lab.tenant.id, "plan": "pro"],
                "free_tenant": ["id": freeTenant.id, "plan": "free"],
                "big_tenant": ["id": bigTenant.id, "plan": "pro", "nodes": 16],
                "node": ["id": registered.id, "name": registered.name, "ipv4": registered.ipv4, "ipv6": registered.ipv6,
                         "dns_name": registered.dnsName],
                "rate_limit": Int(rateLimit) ?? 5, "rate_window_seconds": Int(rateWindow) ?? 300,
                "idp": ["issuer": idp.issuer, "id": "idp", "name": "Test IdP", "user": "ada", "password": adaPassword, "display_name": "Ada Lovelace"],
                "output": logDir.path,
            ])

            for await line in commands {
                let words = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
                guard let command = words.first else { continue }
                if command == "quit" { break }
                do {
                    emit(try await handle(command, Array(words.dropFirst()), lab: lab, node: node, registered: registered, reports: reports))
                } catch {
                    emit(["ok": false, "error": "\(error)"])
                }
            }
        } catch {
            for g in gateways { await g.terminate(timeout: .seconds(5)) }
            await identityProvider?.stop()
            try? await lab.stop()
            throw error
        }
        // A service, node or gateway that crashed while the test ran fails the run here.
        var crashed: (any Error)?
        do { try await stopChecked(gateways) } catch { crashed = error }
        await identityProvider?.stop()
        do { try await lab.stop() } catch { crashed = crashed ?? error }
        if let crashed { throw crashed }
        emit(["ok": true, "event": "stopped"])
    }

    /// One command; the answer as a JSON object.
    static func handle(_ command: String, _ args: [String], lab: MeshLab, node: MeshLab.LabNode, registered: Mesh_V1_Node,
                       reports: HandshakeReports) async throws -> [String: Any] {
        switch command {
        case "device-up":
            guard let path = args.first else { throw TestSetupError.failed("usage: device-up <path>") }
            let config = try String(contentsOfFile: path, encoding: .utf8)
            let tunnel = try lab.bringUp(config: config)
            let upAt = Date().unixMilliseconds
            // Traffic through the tunnel to the node: proves the config works (and starts the handshake
            // at once, which PersistentKeepalive would also do on its own).
            let pinged = await lab.reaches(from: tunnel.ns, registered.ipv4, count: 3)
            return ["ok": true, "namespace": tunnel.ns.name, "interface": tunnel.interface, "public_key": tunnel.publicKey,
                    "addresses": tunnel.addresses, "up_at_ms": upAt, "ping_ok": pinged]
        case "handshake-report":
            guard let key = args.first else { throw TestSetupError.failed("usage: handshake-report <public key> [seconds]") }
            let timeout = Double(args.dropFirst().first ?? "") ?? 20
            let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
            while ContinuousClock.now < deadline {
                if let seen = reports.first(key) {
                    return ["ok": true, "report_at_ms": seen.reportAt, "handshake_at_ms": seen.handshakeAt, "node_id": seen.node]
                }
                try await Task.sleep(for: .milliseconds(20))
            }
            throw TestSetupError.failed("no handshake report for \(key) within \(timeout) s")
        case "node-peers":
            return ["ok": true, "peers": Array(try lab.livePeers(node)).sorted()]
        case "extra-node":
            // A registration without a NodeApplier: a node that configs list and that can be removed.
            guard let name = args.first else { throw TestSetupError.failed("usage: extra-node <name>") }
            let (n, _) = try await lab.cp.node(lab.tenant, admin: lab.admin, name: name, endpoint: "127.0.0.1:\(Int.random(in: 53000...54000))")
            return ["ok": true, "node_id": n.id, "name": n.name]
        case "remove-node":
            guard let id = args.first else { throw TestSetupError.failed("usage: remove-node <id>") }
            _ = try await lab.cp.client.deregisterNode(caller: lab.admin, nodeID: id)
            return ["ok": true]
        default:
            throw TestSetupError.failed("unknown command \(command)")
        }
    }

    /// Waits until a gateway answers `/readyz` with 200.
    static func waitReady(_ url: String, _ process: ManagedProcess) async throws {
        for _ in 0..<300 {
            let r = try await run("/usr/bin/env", ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", "\(url)/readyz"])
            // A 200 from a process that is no longer ours to ask means another listener has the port.
            if r.stdout == "200", process.isRunning { return }
            guard process.isRunning else { throw TestSetupError.failed("\(process.name) exited:\n\(process.log().suffix(3000))") }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw TestSetupError.failed("\(process.name) not ready at \(url):\n\(process.log().suffix(3000))")
    }

    /// Writes one JSON object as one line on stdout.
    static func emit(_ object: [String: Any]) {
        guard var data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return }
        data.append(0x0A)
        FileHandle.standardOutput.write(data)
    }
}

/// The first handshake report of each peer key: when the report arrived and the handshake it names.
final class HandshakeReports: Sendable {
    struct Seen: Sendable {
        var reportAt: Int64
        var handshakeAt: Int64
        var node: String
    }

    private let seen = Mutex<[String: Seen]>([:])

    func record(_ report: Mesh_V1_HandshakeReport) {
        let now = Date().unixMilliseconds
        seen.withLock { map in
            for peer in report.peers where peer.lastHandshakeMs > 0 && map[peer.publicKey] == nil {
                map[peer.publicKey] = Seen(reportAt: now, handshakeAt: peer.lastHandshakeMs, node: report.nodeID)
            }
        }
    }

    func first(_ key: String) -> Seen? { seen.withLock { $0[key] } }
}

/// Lines from stdin as an async sequence; ends with end of input, SIGINT or SIGTERM (as "quit").
enum CommandInput {
    static func start() -> AsyncStream<String> {
        let (stream, continuation) = AsyncStream<String>.makeStream()
        let reader = Thread {
            while let line = readLine() { continuation.yield(line.trimmingCharacters(in: .whitespaces)) }
            continuation.yield("quit")
            continuation.finish()
        }
        reader.start()
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler {
                continuation.yield("quit")
                continuation.finish()
            }
            source.resume()
            sources.append(source)
        }
        return stream
    }

    /// Signal sources stay alive for the life of the process. Written once, by `start()`, before any
    /// other code could look at it.
    nonisolated(unsafe) private static var sources: [any DispatchSourceSignal] = []
}
