import Foundation
import MeshClient
import MeshDomain
import MeshProto
import MeshTestSupport
import Testing

/// Suspension, resumption, expiry and the mesh switch with real WireGuard: two nodes running
/// NodeApplier with wireguard-go in namespaces, devices brought up from the exact configs they were
/// given, and the nodes' mesh DNS.
@Suite(.enabled(if: TestEnvironment.runs(root: true, infra: true, tools: ["wireguard-go", "wg", "ip", "dig", "ping"]),
                "needs root, wireguard-go, nats-server and PostgreSQL"), .serialized,
       .timeLimit(.minutes(10)))
struct LifecycleE2ETests {
    init() throws { try TestEnvironment.require(root: true, infra: true, tools: ["wireguard-go", "wg", "ip", "dig", "ping"]) }

    func dig(_ from: NetNamespace, _ server: String, _ name: String) async -> String {
        (try? await from.tryExec(["dig", "+short", "+time=1", "+tries=3", "@\(server)", name, "A"]).stdout)?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
    }

    /// Waits until `condition` holds; false after `within`.
    func eventually(within: Duration = .seconds(30), _ condition: () async throws -> Bool) async rethrows -> Bool {
        let deadline = ContinuousClock.now + within
        while ContinuousClock.now < deadline {
            if try await condition() { return true }
            try? await Task.sleep(for: .milliseconds(200))
        }
        return false
    }

    /// Pings until it answers (the first packets start handshakes); false after `within`.
    func reaches(_ lab: MeshLab, from ns: NetNamespace, _ address: String, within: Duration = .seconds(45)) async -> Bool {
        await lab.reaches(from: ns, address, count: 1, within: within)
    }

    /// The handshake times (Unix seconds, 0: never) a WireGuard interface has for each peer key.
    func handshakes(_ ns: NetNamespace, _ interface: String) throws -> [String: Int] {
        var out: [String: Int] = [:]
        for line in try ns.exec(["wg", "show", interface, "latest-handshakes"]).split(separator: "\n") {
            let f = line.split(separator: "\t")
            if f.count == 2 { out[String(f[0])] = Int(f[1]) ?? 0 }
        }
        return out
    }

    /// Bytes a device's interface received from each peer.
    func received(_ ns: NetNamespace, _ interface: String) throws -> Int {
        try ns.exec(["wg", "show", interface, "transfer"]).split(separator: "\n").reduce(0) { sum, line in
            let f = line.split(separator: "\t")
            return sum + (f.count == 3 ? Int(f[1]) ?? 0 : 0)
        }
    }

    @Test func suspendResumeExpiryAndTheMeshSwitchWithRealWireGuard() async throws {
        let lab = try await MeshLab.start("lifecycle", plan: .team, environment: ["MESH_EXPIRY_SWEEP_SECONDS": "1"])
        do {
            try await run(lab)
        } catch {
            try await lab.stop()
            throw error
        }
        try await lab.stop()
    }

    func run(_ lab: MeshLab) async throws {
        let alpha = try await lab.addNode("alpha")
        let beta = try await lab.addNode("beta")
        let nodes = [alpha, beta]
        let a = try await lab.addDevice("Ann's laptop")
        let b = try await lab.addDevice("Bob's phone", type: .android)
        try await lab.waitConverged()
        for d in [a, b] {
            for n in nodes { #expect(await reaches(lab, from: d.ns, n.node!.ipv4), "\(d.device.label) -> \(n.name)") }
        }
        #expect(await reaches(lab, from: a.ns, b.device.ipv4), "device to device through the hub")
        for n in nodes { #expect(await dig(beta.ns, n.node!.ipv4, b.device.dnsName) == b.device.ipv4, "\(b.device.dnsName) at \(n.name)") }

        // Suspend: the device leaves both interfaces and the mesh DNS; its config gets nothing back.
        let suspendStart = ContinuousClock.now
        let suspended = try await lab.cp.client.suspendDevice(caller: lab.admin, deviceID: b.device.id)
        #expect(suspended.device.status == .suspended)
        #expect(await eventually { nodes.allSatisfy { (try? lab.livePeers($0))?.contains(b.device.publicKey) == false } }, "both nodes dropped the suspended device")
        print("suspend to the key gone from both interfaces: \(ContinuousClock.now - suspendStart)")
        try await lab.waitConverged()
        for n in nodes { #expect(!(try lab.livePeers(n)).contains(b.device.publicKey), "\(n.name) dropped the suspended device") }
        #expect(await eventually { await nodes.allSatisfy { await dig(beta.ns, $0.node!.ipv4, b.device.dnsName).isEmpty } }, "the suspended name stops resolving")
        #expect(await dig(beta.ns, alpha.node!.ipv4, a.device.dnsName) == a.device.ipv4, "other names still resolve")
        let before = try received(b.ns, b.interface)
        for n in nodes { #expect(await lab.isCutOff(from: b.ns, n.node!.ipv4, count: 2), "the suspended device still reaches \(n.name)") }
        #expect(try received(b.ns, b.interface) == before, "no node answers the suspended device's packets")
        #expect(await lab.isCutOff(from: a.ns, b.device.ipv4, count: 2), "another device still reaches the suspended one")
        #expect(await lab.reaches(from: a.ns, alpha.node!.ipv4, count: 1), "the other device keeps working")

        // Resume: back on both nodes; the device handshakes again and reaches the mesh; its name resolves.
        let resumeStart = ContinuousClock.now
        _ = try await lab.cp.client.resumeDevice(caller: lab.admin, deviceID: b.device.id)
        #expect(await eventually { nodes.allSatisfy { (try? lab.livePeers($0))?.contains(b.device.publicKey) == true } }, "both nodes hold the resumed device")
        print("resume to the key back on both interfaces: \(ContinuousClock.now - resumeStart)")
        try await lab.waitConverged()
        for n in nodes { #expect(await reaches(lab, from: b.ns, n.node!.ipv4), "resumed device -> \(n.name)") }
        #expect(try handshakes(alpha.ns, alpha.interface)[b.device.publicKey, default: 0] > 0, "alpha handshook with the resumed device")
        #expect(try received(b.ns, b.interface) > before)
        #expect(await eventually { await nodes.allSatisfy { await dig(beta.ns, $0.node!.ipv4, b.device.dnsName) == b.device.ipv4 } }, "the name resolves again")
        #expect(await reaches(lab, from: a.ns, b.device.ipv4), "device to device again")

        // Expiry: suspended by a sweeper within 60 s of it; a resume is refused until an admin extends it.
        let expires = Date().addingTimeInterval(8).unixMilliseconds
        let c = try await lab.addDevice("Temp tablet", type: .other, expiresAtMs: expires)
        #expect(c.device.expiresAtMs == expires)
        #expect(await reaches(lab, from: c.ns, alpha.node!.ipv4), "the temporary device works before its expiry")
        let expired = await eventually(within: .seconds(Date(unixMilliseconds: expires).addingTimeInterval(60).timeIntervalSinceNow)) {
            (try? await lab.cp.client.getDevice(caller: lab.admin, deviceID: c.device.id).status) == .expired
        }
        #expect(expired, "the device expired within 60 s of its expiry")
        if expired {
            let at = try await lab.cp.client.getDevice(caller: lab.admin, deviceID: c.device.id).suspendedAtMs
            print("expiry to suspension (sweep every 1 s): \(at - expires) ms")
        }
        try await lab.waitConverged()
        for n in nodes { #expect(!(try lab.livePeers(n)).contains(c.device.publicKey), "\(n.name) dropped the expired device") }
        #expect(await eventually { await dig(beta.ns, alpha.node!.ipv4, c.device.dnsName).isEmpty }, "the expired name stops resolving")
        #expect(await lab.isCutOff(from: c.ns, alpha.node!.ipv4, count: 2))
        let refused = await meshError { _ = try await lab.cp.client.resumeDevice(caller: lab.admin, deviceID: c.device.id) }
        #expect(refused?.code == .failedPrecondition, "resume of an expired device: \(String(describing: refused))")
        let extended = try await lab.cp.client.setDeviceExpiry(caller: lab.admin, deviceID: c.device.id,
                                                               expiresAtMs: Date().addingTimeInterval(3600).unixMilliseconds)
        #expect(extended.device.status == .active)
        try await lab.waitConverged()
        #expect(await reaches(lab, from: c.ns, alpha.node!.ipv4), "the extended device is back")

        // The mesh switched off: no node holds any device (nodes keep each other), no device name
        // resolves; switched on, every device is back.
        var off = Mesh_V1_UpdateTenantSettingsRequest()
        off.caller = lab.admin
        off.meshEnabled = false
        let deviceKeys = Set([a, b, c].map(\.device.publicKey))
        let offStart = ContinuousClock.now
        _ = try await lab.cp.client.updateTenantSettings(off)
        #expect(await eventually { nodes.allSatisfy { (try? lab.livePeers($0))?.isDisjoint(with: deviceKeys) == true } }, "no node holds a device")
        print("mesh off to no device on either interface: \(ContinuousClock.now - offStart)")
        try await lab.waitConverged()
        for n in nodes {
            let live = try lab.livePeers(n)
            #expect(live.isDisjoint(with: deviceKeys), "\(n.name) holds a device with the mesh off")
            #expect(live.count == 1, "\(n.name) keeps the other node: \(live)")
        }
        #expect(await lab.reaches(from: alpha.ns, beta.node!.ipv4, count: 2), "nodes still reach each other")
        #expect(await eventually { await [a, b, c].allSatisfy { await dig(beta.ns, alpha.node!.ipv4, $0.device.dnsName).isEmpty } }, "no device name resolves")
        #expect(await dig(beta.ns, alpha.node!.ipv4, beta.node!.dnsName) == beta.node!.ipv4, "node names still resolve")
        for d in [a, b, c] { #expect(await lab.isCutOff(from: d.ns, alpha.node!.ipv4, count: 2), "\(d.device.label) reaches a node with the mesh off") }
        let refusedCreate = await meshError { _ = try await lab.cp.client.createDevice(caller: lab.admin, label: "no", type: .other) }
        #expect(refusedCreate?.code == .failedPrecondition)

        var on = off
        on.meshEnabled = true
        let onStart = ContinuousClock.now
        _ = try await lab.cp.client.updateTenantSettings(on)
        #expect(await eventually { nodes.allSatisfy { (try? lab.livePeers($0)).map { deviceKeys.isSubset(of: $0) } == true } }, "every device back on every node")
        print("mesh on to every device back on both interfaces: \(ContinuousClock.now - onStart)")
        try await lab.waitConverged()
        for d in [a, b, c] {
            for n in nodes { #expect(await reaches(lab, from: d.ns, n.node!.ipv4), "\(d.device.label) -> \(n.name) with the mesh on again") }
        }
        #expect(await eventually { await [a, b, c].allSatisfy { await dig(beta.ns, alpha.node!.ipv4, $0.device.dnsName) == $0.device.ipv4 } })
    }
}
