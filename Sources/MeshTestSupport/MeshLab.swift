import Foundation
import MeshBus
import MeshClient
import MeshDomain
import MeshProto

/// A whole mesh on one machine for end-to-end tests: the control plane (real executables, NATS on a
/// bridge), nodes running the real NodeApplier with wireguard-go in their own network namespaces,
/// and devices brought up from the config they were given, in namespaces of their own.
public final class MeshLab: @unchecked Sendable {
    public let cp: ControlPlane
    public let bridge: TestBridge
    public let tenant: Mesh_V1_Tenant
    public let admin: Mesh_V1_Caller
    public private(set) var nodes: [LabNode] = []
    public private(set) var devices: [LabDevice] = []
    /// Every device namespace made so far (``addDevice(_:type:)`` and ``bringUp(config:)``), for clean-up.
    private var tunnels: [NetNamespace] = []
    let subnet: String
    /// The IPv6 underlay's prefix ("fdxx:xxxx:xxxx::"), when the lab has one: nodes' endpoints are then
    /// IPv6 and every WireGuard packet crosses the bridge over IPv6.
    let subnet6: String?
    let out: URL
    let environment: [String: String]

    /// A node: its namespace, the NodeApplier process, and its registration.
    public final class LabNode: @unchecked Sendable {
        public let name: String
        public let ns: NetNamespace
        public let address: String
        public let interface: String
        public let stateDir: URL
        public var process: ManagedProcess?
        public var node: Mesh_V1_Node?
        /// Removed from the mesh on purpose (deregistered, NodeApplier stopped): convergence and the
        /// running check leave it out; ``MeshLab/stop()`` still cleans it up.
        public var removed = false

        init(name: String, ns: NetNamespace, address: String, interface: String, stateDir: URL) {
            self.name = name
            self.ns = ns
            self.address = address
            self.interface = interface
            self.stateDir = stateDir
        }
    }

    /// A device brought up from its config.
    public struct LabDevice: Sendable {
        public let device: Mesh_V1_Device
        public let config: String
        public let ns: NetNamespace
        public let interface: String
    }

    /// Starts the control plane on a bridge; `secureBus` runs it on the secured bus (per-service and
    /// per-node credentials, TLS), and the nodes enroll with the bootstrap identity.
    public static func start(_ name: String, plan: Mesh_V1_Plan = .enterprise, environment: [String: String] = [:],
                             secureBus: Bool = false, underlay6: Bool = false, databaseAdminURL: String? = nil) async throws -> MeshLab {
        let octet = Int.random(in: 100...250)
        let subnet = "10.\(octet).\(Int.random(in: 1...250))"
        let bridge = try TestBridge(address: "\(subnet).1/24")
        let subnet6 = underlay6 ? String(format: "fd%02x:%04x:%04x::", Int.random(in: 0...255), Int.random(in: 0...0xffff), Int.random(in: 0...0xffff)) : nil
        var env = environment
        env["MESH_RATE_LIMIT"] = env["MESH_RATE_LIMIT"] ?? "0"
        let cp = try await ControlPlane.start(name, fanout: 1, environment: env, natsHost: bridge.host, secureBus: secureBus, secureTLS: secureBus,
                                              databaseAdminURL: databaseAdminURL)
        let tenant = try await cp.tenant(plan)
        let admin = try await cp.user(tenant, .admin)
        return MeshLab(cp: cp, bridge: bridge, tenant: tenant, admin: admin, subnet: subnet, subnet6: subnet6,
                       out: TestEnvironment.outputDir("lab-\(name)"), environment: env)
    }

    private init(cp: ControlPlane, bridge: TestBridge, tenant: Mesh_V1_Tenant, admin: Mesh_V1_Caller, subnet: String, subnet6: String?,
                 out: URL, environment: [String: String]) {
        self.subnet6 = subnet6
        self.cp = cp
        self.bridge = bridge
        self.tenant = tenant
        self.admin = admin
        self.subnet = subnet
        self.out = out
        self.environment = environment
    }

    /// The IPv6 underlay address that goes with an IPv4 one on the bridge (same last octet), if any.
    public func underlay6(_ address: String) -> String? {
        subnet6.map { "\($0)\(address.split(separator: ".").last ?? "1")" }
    }

    /// Adds a node namespace and starts NodeApplier in it (it registers with a fresh enrollment token).
    @discardableResult
    public func addNode(_ name: String, environment extra: [String: String] = [:], timeout: Duration = .seconds(60)) async throws -> LabNode {
        let ns = try NetNamespace(prefix: "n")
        let address = "\(subnet).\(11 + nodes.count)"
        try bridge.attach(ns, "\(address)/24", underlay6(address).map { ["\($0)/64"] } ?? [])
        let stateDir = out.appendingPathComponent("node-\(name)-\(Nuid.short())")
        let node = LabNode(name: name, ns: ns, address: address, interface: uniqueInterfaceName("wn"), stateDir: stateDir)
        nodes.append(node)
        let token = try await cp.client.createEnrollmentToken(caller: admin)
        try startNodeProcess(node, token: token.token, extra: extra)
        node.node = try await waitForNode(name, timeout: timeout)
        return node
    }

    /// (Re)starts NodeApplier for a node. `extra` overrides any setting (e.g. `MESH_WG_BACKEND`,
    /// userspace by default).
    public func startNodeProcess(_ node: LabNode, token: String = "", extra: [String: String] = [:]) throws {
        var env = environment.merging(cp.security?.nodeEnvironment ?? [:]) { _, new in new }
        env["MESH_NATS_URL"] = cp.nats.url
        env["MESH_NODE_NAME"] = node.name
        env["MESH_NODE_STATE_DIR"] = node.stateDir.path
        env["MESH_WG_INTERFACE"] = node.interface
        env["MESH_WG_LISTEN_PORT"] = "51820"
        env["MESH_NODE_ENDPOINT"] = underlay6(node.address).map { "[\($0)]:51820" } ?? "\(node.address):51820"
        env["MESH_WG_BACKEND"] = "userspace"
        env["MESH_INSTANCE"] = "node-\(node.name)"
        env["MESH_DNS_PORT"] = env["MESH_DNS_PORT"] ?? "53"
        env["MESH_LOG_LEVEL"] = env["MESH_LOG_LEVEL"] ?? "debug"
        env.merge(extra) { _, new in new }
        if !token.isEmpty { env["MESH_NODE_ENROLLMENT_TOKEN"] = token }
        node.process = try ManagedProcess(name: "NodeApplier-\(node.name)-\(Nuid.short())", executable: TestEnvironment.which("ip"),
                                          arguments: ["netns", "exec", node.ns.name, TestEnvironment.binDir.appendingPathComponent("NodeApplier").path],
                                          environment: env, logDir: out)
    }

    /// Waits until the node is registered and answers its state subject with a synced state.
    public func waitForNode(_ name: String, timeout: Duration = .seconds(60)) async throws -> Mesh_V1_Node {
        let deadline = ContinuousClock.now + timeout
        let nodeClient = NodeClient(bus: cp.bus, timeout: .seconds(2))
        while ContinuousClock.now < deadline {
            if let n = try? await cp.client.listNodes(caller: admin).first(where: { $0.name == name }),
               let st = try? await nodeClient.state(nodeID: n.id), st.active {
                return n
            }
            if let lab = nodes.first(where: { $0.name == name }), let p = lab.process, !p.isRunning {
                throw TestSetupError.failed("NodeApplier \(name) exited:\n\(p.log().suffix(4000))")
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw TestSetupError.failed("node \(name) did not come up; log:\n\(nodes.first { $0.name == name }?.process?.log().suffix(4000) ?? "")")
    }

    /// Provisions a device through ProvisionSvc (owned by `owner`, the admin by default) and brings it
    /// up in its own namespace from the config it was given (see ``bringUp(config:)``).
    @discardableResult
    public func addDevice(_ label: String, type: Mesh_V1_DeviceType = .laptop, expiresAtMs: Int64 = 0, owner: Mesh_V1_Caller? = nil) async throws -> LabDevice {
        let created = try await cp.client.createDevice(caller: owner ?? admin, label: label, type: type, expiresAtMs: expiresAtMs)
        let tunnel = try bringUp(config: created.config)
        let d = LabDevice(device: created.device, config: created.config, ns: tunnel.ns, interface: tunnel.interface)
        devices.append(d)
        return d
    }

    /// A device interface brought up from a config text, in a namespace of its own on the lab's bridge.
    public struct LabTunnel: Sendable {
        public let ns: NetNamespace
        public let interface: String
        /// The config's `Address` entries, with prefix lengths (`100.64.16.1/32`).
        public let addresses: [String]
        /// The public key of the config's private key (computed with `wg pubkey`).
        public let publicKey: String
        /// The namespace's address on the bridge, where it reaches the nodes' endpoints.
        public let bridgeAddress: String
    }

    /// Brings up a wg-quick config exactly as given, the way wg-quick would: a fresh namespace on the
    /// bridge, wireguard-go, `wg-quick strip` + `wg setconf`, the `Address` entries, the MTU, and a
    /// route for every allowed IP. Nothing is read from the control plane, so this checks the config
    /// text itself (for example one a browser downloaded).
    public func bringUp(config: String) throws -> LabTunnel {
        let fields = Self.interfaceFields(config)
        guard let addressLine = fields["address"], let privateKey = fields["privatekey"] else {
            throw TestSetupError.failed("config has no [Interface] Address or PrivateKey")
        }
        let addresses = addressLine.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        let pub = try run("/usr/bin/env", ["wg", "pubkey"], input: privateKey + "\n")
        guard pub.status == 0 else { throw TestSetupError.failed("wg pubkey: \(pub.output)") }
        let ns = try NetNamespace(prefix: "d")
        tunnels.append(ns)
        let bridgeAddress = "\(subnet).\(101 + tunnels.count - 1)"
        try bridge.attach(ns, "\(bridgeAddress)/24", underlay6(bridgeAddress).map { ["\($0)/64"] } ?? [])
        let iface = uniqueInterfaceName("wd")
        let conf = out.appendingPathComponent("\(iface).conf")
        _ = FileManager.default.createFile(atPath: conf.path, contents: Data(config.utf8), attributes: [.posixPermissions: 0o600])
        let stripped = try run("/usr/bin/env", ["wg-quick", "strip", conf.path])
        guard stripped.status == 0 else { throw TestSetupError.failed("wg-quick strip: \(stripped.output)") }
        let strippedPath = out.appendingPathComponent("\(iface).stripped")
        _ = FileManager.default.createFile(atPath: strippedPath.path, contents: Data(stripped.stdout.utf8), attributes: [.posixPermissions: 0o600])
        try ns.startWireGuardGo(iface)
        try ns.exec(["wg", "setconf", iface, strippedPath.path])
        for address in addresses {
            try ns.exec(["ip"] + (address.contains(":") ? ["-6"] : []) + ["addr", "add", address, "dev", iface])
        }
        try ns.exec(["ip", "link", "set", iface, "mtu", fields["mtu"] ?? "1420", "up"])
        try addRoutesForAllowedIPs(ns, iface)
        return LabTunnel(ns: ns, interface: iface, addresses: addresses,
                         publicKey: pub.stdout.trimmingCharacters(in: .whitespacesAndNewlines), bridgeAddress: bridgeAddress)
    }

    /// The `[Interface]` settings of a wg-quick config, keys lowercased.
    static func interfaceFields(_ config: String) -> [String: String] {
        var fields: [String: String] = [:]
        var inInterface = false
        for raw in config.split(whereSeparator: \.isNewline) {
            let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false)[0].trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("[") { inInterface = line.lowercased() == "[interface]"; continue }
            guard inInterface, let eq = line.firstIndex(of: "=") else { continue }
            let key = line[..<eq].trimmingCharacters(in: .whitespaces).lowercased()
            let value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            // wg-quick allows a setting to repeat (Address = a, then Address = b): keep them all.
            fields[key] = fields[key].map { "\($0), \(value)" } ?? value
        }
        return fields
    }

    /// The public keys the node's interface holds now (read with `wg`, not with our library).
    public func livePeers(_ node: LabNode) throws -> Set<String> {
        let dump = try node.ns.exec(["wg", "show", node.interface, "dump"])
        return Set(dump.split(separator: "\n").dropFirst().compactMap { $0.split(separator: "\t").first.map(String.init) })
    }

    /// The public keys the database says the node should hold: every other node, and every device
    /// whose config lists this node (docs/routing.md), read from ProvisionSvc's tables, not through
    /// the code that computes peers.
    public func expectedPeers(_ node: LabNode) async throws -> Set<String> {
        guard let id = node.node.map({ UUID(uuidString: $0.id)! }) else { return [] }
        let rows = try await cp.store.query("""
            SELECT public_key FROM devices d JOIN tenants t ON t.id = d.tenant_id
             WHERE d.tenant_id = $1 AND t.mesh_enabled AND d.suspended_at IS NULL
               AND d.config_nodes @> jsonb_build_array(jsonb_build_object('id', $2::text))
            UNION ALL SELECT public_key FROM nodes WHERE tenant_id = $1 AND id <> $2::uuid
            """, UUID(uuidString: tenant.id)!, id.lowercased)
        return Set(try rows.map { try $0.decode("public_key", as: String.self) })
    }

    /// Every allowed IP of every peer on an interface in a namespace (read with `wg`).
    public static func allowedIPs(_ ns: NetNamespace, _ interface: String) throws -> [String: [String]] {
        let out = try ns.exec(["wg", "show", interface, "allowed-ips"])
        var byKey: [String: [String]] = [:]
        for line in out.split(separator: "\n") {
            let fields = line.split(whereSeparator: { $0 == "\t" || $0 == " " }).map(String.init)
            guard let key = fields.first else { continue }
            byKey[key] = fields.dropFirst().filter { $0 != "(none)" }
        }
        return byKey
    }

    /// Waits until every node's interface holds exactly the database's peer set; returns how long it
    /// took. Every node must be running: a node whose NodeApplier has exited (crashed, or stopped and
    /// not started again) fails the wait at once, with its log, instead of being left out.
    @discardableResult
    public func waitConverged(timeout: Duration = .seconds(90)) async throws -> Duration {
        let start = ContinuousClock.now
        while ContinuousClock.now - start < timeout {
            try checkNodesRunning()
            try cp.checkAlive()
            var ok = true
            for n in nodes where !n.removed {
                let live = try await offPool { try self.livePeers(n) }
                if live != (try await expectedPeers(n)) { ok = false; break }
            }
            if ok { return ContinuousClock.now - start }
            try await Task.sleep(for: .milliseconds(100))
        }
        var report = ""
        for n in nodes {
            let live = (try? livePeers(n)) ?? [], want = (try? await expectedPeers(n)) ?? []
            report += "\(n.name): missing \(want.subtracting(live).count), extra \(live.subtracting(want).count)\n"
        }
        throw TestSetupError.failed("nodes did not converge within \(timeout):\n\(report)")
    }

    /// Throws unless every node's NodeApplier is running.
    public func checkNodesRunning() throws {
        for n in nodes where !n.removed {
            guard let p = n.process else { throw TestSetupError.failed("node \(n.name) has no NodeApplier process") }
            try p.checkAlive()
            guard p.isRunning else { throw TestSetupError.failed("node \(n.name): its NodeApplier was stopped and not started again") }
        }
    }

    /// One round of `count` pings from a namespace (each answer waited for up to 2 s): true when a
    /// reply came. Blocking: called off the cooperative pool by the two below.
    private func pingOnce(from ns: NetNamespace, _ address: String, count: Int = 1) -> Bool {
        let v6 = address.contains(":")
        let r = try? ns.tryExec(["ping"] + (v6 ? ["-6"] : []) + ["-c", "\(count)", "-i", "0.2", "-W", "2", address])
        return r?.status == 0
    }

    /// Pings `address` from a namespace until a reply comes (true) or `within` passes (false). A
    /// first packet can be lost while WireGuard handshakes, more so on a busy machine: what is
    /// checked is that traffic gets through, not how soon. Waited for off the cooperative pool.
    public func reaches(from ns: NetNamespace, _ address: String, count: Int = 2, within: Duration = .seconds(30)) async -> Bool {
        let deadline = ContinuousClock.now + within
        repeat {
            if (try? await offPool { self.pingOnce(from: ns, address, count: count) }) == true { return true }
        } while ContinuousClock.now < deadline
        return false
    }

    /// True when not one of `count` pings from a namespace is answered (each waited for 2 s): the
    /// check that a path is closed. One round, never retried: a retry loop here would only wait
    /// out its deadline.
    public func isCutOff(from ns: NetNamespace, _ address: String, count: Int = 2) async -> Bool {
        (try? await offPool { self.pingOnce(from: ns, address, count: count) }) == false
    }

    /// Stops everything. Throws when a NodeApplier or a service exited while the test ran (unless
    /// the test stopped it) or did not exit 0 on SIGTERM.
    public func stop() async throws {
        var failures: [String] = []
        for n in nodes {
            if let p = n.process {
                do { try await p.stopChecked(timeout: .seconds(10)) } catch { failures.append("\(error)") }
            }
            n.ns.destroy()
        }
        for ns in tunnels { ns.destroy() }
        do { try await cp.stop() } catch { failures.append("\(error)") }
        bridge.destroy()
        if !failures.isEmpty { throw TestSetupError.failed(failures.joined(separator: "\n\n")) }
    }
}
