import Foundation
import MeshClient
import MeshDomain
import MeshProto
import NodeApplierCore

// `FanoutBench sync [--nodes 10000] [--devices 50000] [--agents 40]`: what one simulated node of the
// scale benchmark spends on a restart's full sync, in one process and without a bus: a tenant view of
// that size (devices listed by the hub and the seven oldest nodes, as ProvisionSvc lists them), a
// template agent synced onto an empty in-memory interface, then `--agents` agents that start from a
// copy of that interface and run their own full sync against the shared view. Prints the phases of
// the full computation on the template's view and the time per agent sync.

func syncBench(nodes: Int, devices: Int, agents: Int) async throws {
    func key(_ i: Int, _ salt: UInt8) -> String {
        var b = [UInt8](repeating: salt, count: 32)
        withUnsafeBytes(of: UInt64(i).littleEndian) { for (k, x) in $0.enumerated() { b[k] = x } }
        return Data(b).base64EncodedString()
    }
    func ipv4(_ i: Int) -> String { "100.64.\(i / 256 % 256).\(i % 256)" }
    var settings = Mesh_V1_TenantSettings()
    settings.domain = "quazzar.mesh"
    settings.ipv4Prefix = "100.64.0.0/16"
    settings.ipv6Prefix = "fd7a:115c:a1e0::/48"
    settings.meshEnabled = true
    settings.nodeKeepalive = 25
    var members: [Mesh_V1_Member] = []
    members.reserveCapacity(nodes + devices)
    var nodeIDs: [String] = []
    for i in 0..<nodes {
        var m = Mesh_V1_Member()
        m.id = String(format: "00000000-0000-4000-8000-%012d", i)
        m.kind = .node
        m.publicKey = key(i, 1)
        m.ipv4 = ipv4(i + 1)
        m.ipv6 = "fd7a:115c:a1e0::\(String(i + 1, radix: 16))"
        m.endpoint = "10.\(i / 65536 % 256).\(i / 256 % 256).\(i % 256):51820"
        m.slug = "node-\(i)"
        m.active = true
        nodeIDs.append(m.id)
        members.append(m)
    }
    settings.hubNodeID = nodeIDs[0]
    let listed = Array(nodeIDs.prefix(TenantDefaults.configMaxNodes))
    for i in 0..<devices {
        var m = Mesh_V1_Member()
        m.id = String(format: "10000000-0000-4000-8000-%012d", i)
        m.kind = .device
        m.publicKey = key(i, 2)
        m.ipv4 = ipv4(nodes + 1 + i)
        m.ipv6 = "fd7a:115c:a1e0::\(String(nodes + 1 + i, radix: 16))"
        m.slug = "device-\(i)"
        m.active = true
        m.configHubID = nodeIDs[0]
        m.configNodeIds = listed
        members.append(m)
    }
    let view = MeshView(revision: 1, settings: settings, members: members)
    let viewer = nodeIDs[nodes - 1]  // no device config lists it, like most nodes

    // The phases of the full computation, on the viewer's state.
    let mesh = MeshState(viewer: viewer, revision: view.revision, settings: view.settings, table: view.table)
    var peers: [Mesh_V1_Peer] = []
    let tPeers = time { peers = mesh.peers() }
    var desired: [DesiredPeer] = []
    let tParse = time { desired = peers.compactMap(DesiredPeer.init) }
    print(String(format: "sync: %d members; %d peers for a node no config lists: peers() %.1f ms, DesiredPeer %.1f ms (%d parsed)",
                 view.members.count, peers.count, tPeers * 1e3, tParse * 1e3, desired.count))

    // The template, then agents that restart from its interface.
    func agent(_ name: String, _ backend: InMemoryWireGuard) -> NodeAgent {
        var reg = Mesh_V1_RegisterNodeResponse()
        reg.node.id = viewer
        reg.node.tenantID = "bench"
        return NodeAgent(identity: NodeIdentity(registration: reg), interface: name, backend: backend, logger: logger) { () async throws(MeshError) in view }
    }
    let templateBackend = InMemoryWireGuard(devices: ["t"], recordCalls: false)
    let template = agent("t", templateBackend)
    let templateRun = Task { await template.run() }
    let t0 = ContinuousClock.now
    let first = try await template.refresh(reason: "start")
    print(String(format: "  template sync onto an empty interface: %.1f ms (%d added)", ms(ContinuousClock.now - t0), first.added))
    var each: [Double] = []
    var applied = 0
    for i in 0..<agents {
        let a = agent("a\(i)", InMemoryWireGuard(sharing: templateBackend, device: "t", as: "a\(i)"))
        let run = Task { await a.run() }
        let t = ContinuousClock.now
        let r = try await a.refresh(reason: "start")
        each.append(ms(ContinuousClock.now - t))
        applied += Int(r.added + r.changed + r.removed)
        a.finish()
        await run.value
    }
    template.finish()
    await templateRun.value
    each.sort()
    print(String(format: "  %d restart syncs: p50 %.1f ms, max %.1f ms per agent (%d peer changes in all)",
                 agents, each[each.count / 2], each.last ?? 0, applied))
}
