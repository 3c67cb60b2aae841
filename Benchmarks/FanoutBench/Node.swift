import Foundation
import MeshBus
import MeshClient
import MeshDomain
import MeshProto
import MeshTestSupport
import Synchronization

// `FanoutBench node [--devices 50000] [--changes 100] [--restart-changes 20]` (as root): one real node
// (NodeApplier with wireguard-go in a network namespace, MeshLab) that holds every device of a tenant
// of `devices` devices as a peer. Measures:
//   - NodeApplier's resident memory at that size, while it applied the devices one by one, and as a
//     fresh process after a restart (its first full sync); wireguard-go's own, separately;
//   - one-peer changes on that interface: ProvisionSvc's reply -> the node reports the change's
//     revision applied (it reports a revision only after the interface accepted the change);
//   - a restart: NodeApplier stopped, devices created and deleted meanwhile, NodeApplier started
//     again on the interface it left (wireguard-go outlives it): its full sync's added/changed/removed
//     (from its log) and how long it took to be synced, once with changes and once without.

/// The pid of the wireguard-go daemon that serves `interface`.
func wireguardGoPid(interface: String) -> Int32? {
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return nil }
    for e in entries {
        guard let pid = Int32(e), let data = FileManager.default.contents(atPath: "/proc/\(e)/cmdline") else { continue }
        let args = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        if let first = args.first, first.hasSuffix("wireguard-go"), args.contains(interface) { return pid }
    }
    return nil
}

func nodeAtScale(devices: Int, changes: Int, restartChanges: Int) async throws {
    let started = ContinuousClock.now
    func stamp(_ s: String) {
        print(String(format: "[%6.1f s, load %@] %@", ms(ContinuousClock.now - started) / 1000, loadAverage(), s))
    }
    let lab = try await MeshLab.start("bench-node", environment: ["MESH_LOG_LEVEL": "warning"])
    do {
        let node = try await lab.addNode("big", environment: ["MESH_LOG_LEVEL": "info"])
        guard let nodeID = node.node?.id else { throw TestSetupError.failed("node not registered") }
        let cp = lab.cp, admin = lab.admin, tenant = lab.tenant.id
        let states = NodeClient(bus: cp.bus, timeout: .seconds(10))
        let fan = FanoutClient(bus: cp.bus, timeout: .seconds(60))
        func nodePid() -> Int32 { node.process?.pid ?? 0 }
        func wgPid() -> Int32 { wireguardGoPid(interface: node.interface) ?? 0 }
        /// NodeApplier's RSS sampled 20 times over 6 s, as "min–max MiB (median)": a single reading
        /// can land in the middle of the handshake reporter's reading of the interface (a 17 MB dump
        /// at 50,000 peers), which the node holds for a moment.
        func nodeRSS() async -> String {
            var kib: [Int] = []
            for i in 0..<20 {
                if i > 0 { try? await Task.sleep(for: .milliseconds(300)) }
                kib.append(residentKiB(pid: nodePid()))
            }
            kib.sort()
            return "\(kib.first! / 1024)–\(kib.last! / 1024) MiB (median \(kib[kib.count / 2] / 1024))"
        }
        /// Waits until the node reports `revision` applied; the time it took.
        func waitNode(revision: UInt64, timeout: Duration = .seconds(300)) async throws -> Mesh_V1_NodeState {
            let deadline = ContinuousClock.now + timeout
            while ContinuousClock.now < deadline {
                if let st = try? await states.state(nodeID: nodeID), st.revision >= revision { return st }
                try await Task.sleep(for: .milliseconds(1))
            }
            throw MeshError.deadlineExceeded("the node did not reach revision \(revision)")
        }
        func tenantRevision() async throws -> UInt64 {
            UInt64(try await cp.store.query("SELECT revision FROM provision.tenants WHERE id = $1", UUID(uuidString: tenant)!).first!
                .decode("revision", as: Int64.self))
        }

        // Fill: the node applies every creation as a one-peer change.
        let fillStart = ContinuousClock.now
        let created = ReportList<String>()
        try await (0..<16).concurrentForEach { w in
            for i in stride(from: w, to: devices, by: 16) {
                created.add(try await cp.client.createDevice(caller: admin, label: "fill \(i)", type: .other).device.id)
            }
        }
        stamp(String(format: "created %d devices (%.0f/s)", devices, Double(devices) / (ms(ContinuousClock.now - fillStart) / 1000)))
        var st = try await waitNode(revision: try await tenantRevision())
        stamp("node at revision \(st.revision) with \(st.peerCount) peers")
        print("memory at \(st.peerCount) peers (applied one by one): NodeApplier RSS \(residentKiB(pid: nodePid()) / 1024) MiB, over 6 s \(await nodeRSS()); wireguard-go RSS \(residentKiB(pid: wgPid()) / 1024) MiB")

        // One-peer changes: reply -> applied on the node (which reports a revision once the interface took it).
        let stream = try cp.bus.subscribe(MeshSubjects.peersUpdated(tenant: tenant))
        try await cp.bus.flush()
        let revisions = RevisionBox()
        let watcher = Task {
            for await m in stream {
                guard let u = try? Mesh_V1_PeersUpdated(serializedBytes: m.payload) else { continue }
                switch u.change {
                case .upsert(let x): revisions.put(x.id + "+", u.revision)
                case .remove(let x): revisions.put(x.id + "-", u.revision)
                default: break
                }
            }
        }
        func applied(_ key: String, replied: ContinuousClock.Instant) async throws -> Double {
            let deadline = ContinuousClock.now + .seconds(60)
            while revisions.get(key) == nil {
                guard ContinuousClock.now < deadline else { throw MeshError.deadlineExceeded("\(key) not published") }
                try await Task.sleep(for: .microseconds(200))
            }
            _ = try await waitNode(revision: revisions.get(key)!)
            return ms(ContinuousClock.now - replied)
        }
        var adds: [Double] = [], removes: [Double] = []
        for i in 0..<changes {
            let d = try await cp.client.createDevice(caller: admin, label: "one \(i)", type: .other).device
            adds.append(try await applied(d.id + "+", replied: .now))
            _ = try await cp.client.deleteDevice(caller: admin, deviceID: d.id)
            removes.append(try await applied(d.id + "-", replied: .now))
        }
        report("one-peer add on a \(st.peerCount)-peer node: reply -> applied on the node", adds)
        report("one-peer removal on a \(st.peerCount)-peer node: reply -> applied on the node", removes)
        print("after \(2 * changes) one-peer changes: NodeApplier RSS \(residentKiB(pid: nodePid()) / 1024) MiB, over 6 s \(await nodeRSS()); wireguard-go RSS \(residentKiB(pid: wgPid()) / 1024) MiB")

        // Restarts: NodeApplier stops; the interface (wireguard-go) stays with its peers.
        func restart(label: String, whileDown: () async throws -> Void) async throws {
            _ = await node.process?.terminate()
            try await whileDown()
            let want = try await tenantRevision()
            _ = try await waitRevision(fan, tenant: tenant, want)
            let t0 = ContinuousClock.now
            try lab.startNodeProcess(node, extra: ["MESH_LOG_LEVEL": "info"])  // as addNode started it: its full-sync line is read below
            st = try await waitNode(revision: want)
            let took = ms(ContinuousClock.now - t0)
            // The agent logs its sync after the revision is in force (the filter comes in between).
            func syncLine() -> String? { node.process?.log().split(separator: "\n").last { $0.contains("full sync") }.map(String.init) }
            let logDeadline = ContinuousClock.now + .seconds(60)
            while syncLine() == nil && ContinuousClock.now < logDeadline { try await Task.sleep(for: .milliseconds(20)) }
            let line = syncLine() ?? "(no full sync logged within 60 s)"
            print(String(format: "restart %@: synced %.0f ms after start (process start, registration check, interface check, SyncFromCP, diff); %d peers",
                         label, took, st.peerCount))
            print("  its full sync: \(line)")
            print("  fresh NodeApplier RSS \(residentKiB(pid: nodePid()) / 1024) MiB, over the next 6 s \(await nodeRSS()); wireguard-go RSS \(residentKiB(pid: wgPid()) / 1024) MiB")
        }
        try await restart(label: "with no change while down") {}
        let old = created.items.prefix(restartChanges)
        try await restart(label: "with \(restartChanges) devices created and \(old.count) deleted while down") {
            for i in 0..<restartChanges { _ = try await cp.client.createDevice(caller: admin, label: "while down \(i)", type: .other) }
            for id in old { _ = try await cp.client.deleteDevice(caller: admin, deviceID: id) }
        }
        watcher.cancel()
        stream.unsubscribe()
    } catch {
        try? await lab.stop()
        throw error
    }
    try await lab.stop()
}

/// Waits until FanoutSvc has the tenant at `revision`.
func waitRevision(_ fan: FanoutClient, tenant: String, _ revision: UInt64) async throws -> UInt64 {
    let deadline = ContinuousClock.now + .seconds(300)
    while ContinuousClock.now < deadline {
        let r = try await fan.revision(tenantID: tenant)
        if r >= revision { return r }
        try await Task.sleep(for: .milliseconds(20))
    }
    throw MeshError.deadlineExceeded("FanoutSvc did not reach revision \(revision)")
}

/// Items collected by concurrent tasks.
final class ReportList<T: Sendable>: Sendable {
    let state = Mutex<[T]>([])
    func add(_ x: T) { state.withLock { $0.append(x) } }
    var items: [T] { state.withLock { $0 } }
}
