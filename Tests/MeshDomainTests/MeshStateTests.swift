import Foundation
import MeshDomain
import MeshProto
import Testing

/// A delta and a full sync must agree: a node that follows changes one by one (keeping only the
/// peers each change says it touched) holds exactly what a node that starts from the full list holds.
@Suite("MeshState", .timeLimit(.minutes(1)))
struct MeshStateTests {
    func change(_ r: UInt64, upsert m: Mesh_V1_Member) -> Mesh_V1_PeersUpdated {
        var u = Mesh_V1_PeersUpdated()
        u.revision = r
        u.upsert = m
        return u
    }

    func change(_ r: UInt64, remove m: Mesh_V1_Member) -> Mesh_V1_PeersUpdated {
        var u = Mesh_V1_PeersUpdated()
        u.revision = r
        u.remove = Mesh_V1_MemberRemoval(id: m.id, kind: m.kind, publicKey: m.publicKey)
        return u
    }

    func change(_ r: UInt64, settings s: Mesh_V1_TenantSettings) -> Mesh_V1_PeersUpdated {
        var u = Mesh_V1_PeersUpdated()
        u.revision = r
        u.settings = s
        return u
    }

    /// Every kind of change: devices added, renamed, suspended, re-keyed and deleted; nodes added,
    /// moved, removed; the hub changed and removed; the mesh turned off and on.
    @Test(arguments: [UInt64(7), 11, 2024, 99, 31337])
    func deltasAgreeWithFullSyncs(seed: UInt64) throws {
        var rng = SeededRNG(seed)
        var t = Tenant()
        let viewer = t.node("viewer")
        var follower = MeshState(viewer: viewer.id, revision: 0, settings: t.settings, members: t.members.values)
        var held = Dictionary(uniqueKeysWithValues: follower.peers().map { ($0.id, $0) })
        var revision: UInt64 = 0
        var kinds: [String: Int] = [:]

        func apply(_ u: Mesh_V1_PeersUpdated, _ kind: String) {
            let step = follower.prepare(u)
            if let touched = step.touched {
                for (id, p) in touched {
                    #expect(held[id] == p.before, "seed \(seed): \(kind) saw a stale peer for \(id)")
                    held[id] = p.after
                }
            } else {
                held = Dictionary(uniqueKeysWithValues: follower.peers(after: step).map { ($0.id, $0) })
            }
            follower.commit(step)
            kinds[kind, default: 0] += 1
        }

        for _ in 0..<400 {
            revision += 1
            let devices = t.members.values.filter { $0.kind == .device }.sorted { $0.id < $1.id }
            let nodes = t.nodesByAge.filter { $0.id != viewer.id }
            switch rng.next() % 12 {
            case 0, 1:
                let n = t.node("n\(revision)")
                apply(change(revision, upsert: n), "node added")
            case 2, 3, 4:
                let d = t.device("d\(revision)", max: Int(rng.next() % 3) + 1)
                apply(change(revision, upsert: d), "device added")
            case 5 where !devices.isEmpty:
                var d = devices[Int(rng.next() % UInt64(devices.count))]
                d.slug = "renamed\(revision)"
                t.members[d.id] = d
                apply(change(revision, upsert: d), "device renamed")
            case 6 where !devices.isEmpty:
                var d = devices[Int(rng.next() % UInt64(devices.count))]
                if rng.next() % 2 == 0 { d.active.toggle() } else { d.publicKey = t.key("\(d.id)-\(revision)") }
                t.members[d.id] = d
                apply(change(revision, upsert: d), "device suspended or re-keyed")
            case 7 where !devices.isEmpty:
                let d = devices[Int(rng.next() % UInt64(devices.count))]
                t.members.removeValue(forKey: d.id)
                apply(change(revision, remove: d), "device deleted")
            case 8 where !nodes.isEmpty:
                var n = nodes[Int(rng.next() % UInt64(nodes.count))]
                n.endpoint = "198.51.100.\(revision % 250):51820"
                t.members[n.id] = n
                apply(change(revision, upsert: n), "node moved")
            case 9 where nodes.count > 1:
                let n = nodes[Int(rng.next() % UInt64(nodes.count))]
                t.members.removeValue(forKey: n.id)
                apply(change(revision, remove: n), "node removed")
                if t.settings.hubNodeID == n.id {
                    revision += 1
                    t.settings.hubNodeID = t.nodesByAge.first?.id ?? ""
                    apply(change(revision, settings: t.settings), "hub removed")
                }
            case 10 where !nodes.isEmpty:
                t.settings.hubNodeID = (nodes + [viewer])[Int(rng.next() % UInt64(nodes.count + 1))].id
                apply(change(revision, settings: t.settings), "hub changed")
            case 11:
                t.settings.meshEnabled.toggle()
                apply(change(revision, settings: t.settings), "mesh turned off or on")
            default:
                let d = t.device("d\(revision)")
                apply(change(revision, upsert: d), "device added")
            }
            // A node starting now from the full list holds exactly what the follower holds.
            let fresh = MeshState(viewer: viewer.id, revision: revision, settings: t.settings, members: t.members.values)
            let full = Dictionary(uniqueKeysWithValues: fresh.peers().map { ($0.id, $0) })
            #expect(held.compactMapValues { $0 } == full, "seed \(seed) revision \(revision): a delta disagrees with a full sync")
            #expect(follower.revision == revision)
            if held.compactMapValues({ $0 }) != full { return }
        }
        // Every kind of change happened.
        #expect(kinds.keys.count >= 9, "seed \(seed) covered only \(kinds)")
    }

    @Test func aChangeToOneDeviceTouchesOnlyItAndTheNodeItIsRoutedThrough() {
        var t = Tenant()
        let viewer = t.node("viewer")
        let old = t.node("old")
        t.settings.hubNodeID = old.id
        let phone = t.device("phone", max: 1)  // lists the old hub only
        t.settings.hubNodeID = viewer.id
        let state = MeshState(viewer: viewer.id, revision: 1, settings: t.settings, members: t.members.values)
        var renamed = phone
        renamed.slug = "renamed"
        let step = state.prepare(change(2, upsert: renamed))
        #expect(Set(step.touched?.keys ?? [:].keys) == [phone.id, old.id])
        #expect(step.touched?[old.id]?.after?.allowedIps.contains("\(phone.ipv4)/32") == true)
        #expect(!step.removesViewer)
        #expect(state.prepare(change(3, remove: viewer)).removesViewer)
    }
}
