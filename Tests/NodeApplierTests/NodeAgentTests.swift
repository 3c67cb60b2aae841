import Foundation
import Logging
import MeshClient
import MeshDomain
import MeshNet
import MeshProto
import MeshTestSupport
import MeshWireGuard
import NodeApplierCore
import Synchronization
import Testing

/// A fake control plane for the agent's revision rules: it returns the tenant's members (this node
/// and the given devices) and counts syncs.
final class FakeCP: Sendable {
    let peers = Mutex<[Mesh_V1_Member]>([])
    let revision = Mutex<UInt64>(0)
    let syncs = Mutex(0)

    func response() -> MeshView {
        syncs.withLock { $0 += 1 }
        return MeshView(revision: revision.withLock { $0 }, settings: testSettings, members: [selfNode] + peers.withLock { $0 })
    }
}

let testSettings: Mesh_V1_TenantSettings = {
    var s = Mesh_V1_TenantSettings()
    s.domain = "quazzar.mesh"
    s.nodeKeepalive = 25
    s.hubNodeID = "self"
    s.ipv4Prefix = "100.64.0.0/16"
    s.ipv6Prefix = "fd00::/48"
    s.meshEnabled = true
    return s
}()

let selfNode: Mesh_V1_Member = {
    var m = Mesh_V1_Member()
    m.id = "self"
    m.kind = .node
    m.publicKey = WireGuardKey(bytes: [UInt8](repeating: 200, count: 32))!.base64
    m.ipv4 = "100.64.0.1"
    m.ipv6 = "fd00::1"
    m.slug = "self"
    m.endpoint = "192.0.2.1:51820"
    m.active = true
    return m
}()

/// Device `n`, whose config lists this node (so the node holds it as a peer).
func peer(_ n: Int) -> Mesh_V1_Member {
    var m = Mesh_V1_Member()
    m.id = "p\(n)"
    m.kind = .device
    m.publicKey = WireGuardKey(bytes: [UInt8](repeating: UInt8(n), count: 32))!.base64
    m.ipv4 = "100.64.16.\(n)"
    m.ipv6 = "fd00::10\(n)"
    m.slug = "p\(n)"
    m.active = true
    m.configHubID = "self"
    m.configNodeIds = ["self"]
    return m
}

/// A full sync through the agent's queue, with a deadline (the reply is a continuation the agent's
/// loop resumes: if the loop is stuck, nothing else would end the wait).
func refresh(_ agent: NodeAgent, _ reason: String) async throws -> Mesh_V1_RefreshResponse {
    try await withDeadline(.seconds(60), "refresh (\(reason)) answered by the agent") { try await agent.refresh(reason: reason) }
}

func update(_ rev: UInt64, added: Mesh_V1_Member) -> Mesh_V1_PeersUpdated {
    var u = Mesh_V1_PeersUpdated()
    u.tenantID = "t1"
    u.revision = rev
    u.upsert = added
    return u
}

func update(_ rev: UInt64, removed: Mesh_V1_Member) -> Mesh_V1_PeersUpdated {
    var u = Mesh_V1_PeersUpdated()
    u.tenantID = "t1"
    u.revision = rev
    u.remove = Mesh_V1_MemberRemoval(id: removed.id, kind: removed.kind, publicKey: removed.publicKey)
    return u
}

@Suite(.timeLimit(.minutes(3))) struct NodeAgentTests {
    /// An agent over an in-memory interface and a fake control plane; `beforeFetch` runs at the start
    /// of every fetch (to fail it, count it or hold it).
    func makeAgent(beforeFetch: @escaping @Sendable () async throws(MeshError) -> Void = {}) -> (NodeAgent, InMemoryWireGuard, FakeCP, Task<Void, Never>) {
        var reg = Mesh_V1_RegisterNodeResponse()
        reg.node.id = "self"
        reg.node.tenantID = "t1"
        let wg = InMemoryWireGuard(devices: ["wg0"])
        let cp = FakeCP()
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let agent = NodeAgent(identity: NodeIdentity(registration: reg), interface: "wg0", backend: wg, logger: logger) { () async throws(MeshError) in
            try await beforeFetch()
            return cp.response()
        }
        let task = Task { await agent.run() }
        return (agent, wg, cp, task)
    }

    func keys(_ wg: InMemoryWireGuard) async throws -> Set<String> {
        Set(try await wg.device(named: "wg0").peers.map(\.publicKey.base64))
    }

    /// Waits for the agent's queue to drain: a refresh is queued behind everything before it.
    func drain(_ agent: NodeAgent) async throws { _ = try await refresh(agent, "drain") }

    /// Interfaces made from another's state share it until they change, and never see each other's changes.
    @Test func sharedInMemoryInterfacesAreIndependent() async throws {
        let template = InMemoryWireGuard(devices: ["t"], recordCalls: false)
        let k1 = try #require(WireGuardKey(base64: peer(1).publicKey)), k2 = try #require(WireGuardKey(base64: peer(2).publicKey))
        let a4 = try #require(IPPrefix("100.64.0.1/32"))
        try await template.configure(device: "t", WireGuardConfig(peers: [
            WireGuardPeerConfig(publicKey: k1, replaceAllowedIPs: true, allowedIPs: [a4])]))
        let copy = InMemoryWireGuard(sharing: template, device: "t", as: "c")
        #expect(try await copy.device(named: "c").peers.map(\.publicKey) == [k1])
        // The copy moves the address to a new peer and drops the old one; the template keeps its own.
        try await copy.configure(device: "c", WireGuardConfig(peers: [
            WireGuardPeerConfig(publicKey: k2, replaceAllowedIPs: true, allowedIPs: [a4]), .removing(k1)]))
        #expect(try await copy.device(named: "c").peers.map(\.publicKey) == [k2])
        #expect(try await copy.device(named: "c").peers.first?.allowedIPs == [a4])
        let t = try await template.device(named: "t")
        #expect(t.peers.map(\.publicKey) == [k1] && t.peers.first?.allowedIPs == [a4])
        // An update-only peer that is missing is skipped and reported, as on a real interface.
        let r = try await copy.configure(device: "c", WireGuardConfig(peers: [WireGuardPeerConfig(publicKey: k1, updateOnly: true, allowedIPs: [a4])]))
        #expect(r.skippedUpdateOnlyPeers == [k1] && copy.peerCount(device: "c") == 1)
    }

    @Test func deltasInOrderAreApplied() async throws {
        let (agent, wg, cp, task) = makeAgent()
        defer { task.cancel() }
        cp.peers.withLock { $0 = [peer(1)] }
        cp.revision.withLock { $0 = 1 }
        _ = try await refresh(agent, "start")
        agent.submit(update(2, added: peer(2)))
        agent.submit(update(3, added: peer(3)))
        agent.submit(update(4, removed: peer(1)))
        // No full sync may happen in between for this to test deltas; compare the count after.
        let syncsBefore = cp.syncs.withLock { $0 }
        try await waitUntil("the agent reaches revision 4", interval: .milliseconds(5)) { agent.revision >= 4 }
        #expect(cp.syncs.withLock { $0 } == syncsBefore, "deltas applied without a full sync")
        #expect(try await keys(wg) == [peer(2).publicKey, peer(3).publicKey])
    }

    @Test func duplicatesAreIgnored() async throws {
        let (agent, wg, cp, task) = makeAgent()
        defer { task.cancel() }
        cp.revision.withLock { $0 = 5 }
        _ = try await refresh(agent, "start")
        agent.submit(update(5, added: peer(9)))  // at the current revision: a duplicate
        agent.submit(update(3, added: peer(8)))  // older
        try await drain(agent)
        #expect(try await keys(wg).isEmpty)
        #expect(agent.revision == 5)
    }

    @Test func aGapTriggersAFullSync() async throws {
        let (agent, wg, cp, task) = makeAgent()
        defer { task.cancel() }
        cp.revision.withLock { $0 = 1 }
        cp.peers.withLock { $0 = [peer(1)] }
        _ = try await refresh(agent, "start")
        // Revisions 2 and 3 were lost; the CP now has peers 1, 2, 3 at revision 4.
        cp.peers.withLock { $0 = [peer(1), peer(2), peer(3)] }
        cp.revision.withLock { $0 = 4 }
        let before = cp.syncs.withLock { $0 }
        agent.submit(update(4, added: peer(3)))
        try await waitUntil("the agent reaches revision 4", interval: .milliseconds(5)) { agent.revision >= 4 }
        #expect(cp.syncs.withLock { $0 } == before + 1)
        #expect(try await keys(wg) == Set([peer(1), peer(2), peer(3)].map(\.publicKey)))
    }

    /// A gap whose full sync fails (the control plane did not answer) is retried on its own, with
    /// no further message or periodic check to trigger it.
    @Test func aFailedSyncIsRetried() async throws {
        let failuresLeft = Mutex(0)
        let (agent, wg, cp, task) = makeAgent { () throws(MeshError) in
            if failuresLeft.withLock({ n in defer { n = max(0, n - 1) }; return n > 0 }) {
                throw MeshError.deadlineExceeded("fanout did not answer")
            }
        }
        defer { task.cancel() }
        cp.revision.withLock { $0 = 1 }
        _ = try await refresh(agent, "start")

        // Revision 2 is lost, 3 arrives: the gap's sync fails three times, then succeeds.
        cp.peers.withLock { $0 = [peer(2), peer(3)] }
        cp.revision.withLock { $0 = 3 }
        failuresLeft.withLock { $0 = 3 }
        agent.submit(update(3, added: peer(3)))
        try await waitUntil("the failed sync is retried until the agent reaches revision 3", interval: .milliseconds(20)) { agent.revision >= 3 }
        #expect(agent.revision == 3)
        #expect(failuresLeft.withLock { $0 } == 0)
        #expect(try await keys(wg) == Set([peer(2), peer(3)].map(\.publicKey)))
    }

    /// Background sync requests made while one waits in the queue add nothing: at 50,000 peers a full
    /// sync outlasted the revision check that asks for it, queued syncs piled up, and deltas waited
    /// behind them. Here one sync is held inside its fetch while 20 more are requested and a delta
    /// arrives: one more sync runs, then the delta.
    @Test func backgroundSyncRequestsCoalesce() async throws {
        let fetches = Mutex(0)
        let hold = Mutex<AsyncGate?>(nil)
        let (agent, wg, cp, task) = makeAgent {
            fetches.withLock { $0 += 1 }
            if let gate = hold.withLock({ g in defer { g = nil }; return g }) { await gate.wait() }
        }
        defer { task.cancel() }
        cp.revision.withLock { $0 = 1 }
        cp.peers.withLock { $0 = [peer(1)] }
        _ = try await refresh(agent, "start")

        let gate = AsyncGate()
        hold.withLock { $0 = gate }
        agent.requestSync(reason: "first")
        try await waitUntil("the first background sync is inside its fetch", interval: .milliseconds(5)) { fetches.withLock { $0 } == 2 }
        cp.revision.withLock { $0 = 2 }
        cp.peers.withLock { $0 = [peer(1), peer(2)] }
        for i in 0..<20 { agent.requestSync(reason: "request \(i)") }
        agent.submit(update(3, added: peer(3)))
        gate.open()
        try await waitUntil("the delta after the syncs is applied", interval: .milliseconds(5)) { agent.revision >= 3 }
        cp.revision.withLock { $0 = 3 }
        cp.peers.withLock { $0 = [peer(1), peer(2), peer(3)] }
        try await drain(agent)
        #expect(fetches.withLock { $0 } == 4, "start, the held sync, one for the 20 requests, the drain")
        #expect(agent.revision == 3)
        #expect(try await keys(wg) == Set([peer(1), peer(2), peer(3)].map(\.publicKey)))
    }

    /// The revision check calls a node behind only when it has not reached the tip the previous
    /// check saw (a tip ahead of the node is normal while deltas are in flight).
    @Test func revisionLagWaitsOneCheck() {
        var lag = RevisionLag()
        #expect(lag.check(tip: 10, applied: 5) == nil, "deltas in flight")
        #expect(lag.check(tip: 20, applied: 15) == nil, "reached the previous tip")
        #expect(lag.check(tip: 20, applied: 18) == 20, "still short of the previous tip")
        #expect(lag.check(tip: 20, applied: 20) == nil)
        #expect(lag.check(tip: 25, applied: 20) == nil)
        #expect(lag.check(tip: 25, applied: 24) == 25)
    }

    @Test func fullSyncOnlyTouchesTheDifference() async throws {
        let (agent, wg, cp, task) = makeAgent()
        defer { task.cancel() }
        cp.peers.withLock { $0 = (1...20).map { peer($0) } }
        cp.revision.withLock { $0 = 20 }
        _ = try await refresh(agent, "start")
        wg.calls.withLock { $0.removeAll() }
        cp.peers.withLock { $0 = (2...21).map { peer($0) } }
        cp.revision.withLock { $0 = 22 }
        let r = try await refresh(agent, "again")
        #expect(r.added == 1 && r.removed == 1 && r.changed == 0)
        let sent = wg.calls.withLock { $0.flatMap(\.peers) }
        #expect(sent.count == 2, "only the difference is sent, never a replace-all")
        #expect(wg.calls.withLock { $0.allSatisfy { !$0.replacePeers } })
    }

    @Test func updatesForAnotherTenantAreIgnored() async throws {
        let (agent, wg, _, task) = makeAgent()
        defer { task.cancel() }
        _ = try await refresh(agent, "start")
        var u = update(1, added: peer(1))
        u.tenantID = "other"
        agent.submit(u)
        try await drain(agent)
        #expect(try await keys(wg).isEmpty)
    }

    @Test func malformedPeersAreSkippedNotFatal() async throws {
        let (agent, wg, cp, task) = makeAgent()
        defer { task.cancel() }
        _ = try await refresh(agent, "start")
        var bad = peer(7)
        bad.publicKey = "not a key"
        var badIP = peer(6)
        badIP.ipv4 = "300.1.1.1"
        _ = cp
        agent.submit(update(1, added: bad))
        agent.submit(update(2, added: badIP))
        agent.submit(update(3, added: peer(5)))
        try await waitUntil("the agent reaches revision 3", interval: .milliseconds(5)) { agent.revision >= 3 }
        #expect(try await keys(wg) == [peer(5).publicKey])
    }
}
