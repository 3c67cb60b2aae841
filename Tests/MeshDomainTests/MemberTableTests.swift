import MeshDomain
import MeshProto
import Testing

/// The member table behind MeshState: its indexes follow every change, and copies are independent.
@Suite(.timeLimit(.minutes(1))) struct MemberTableTests {
    func member(_ id: String, key: String, kind: Mesh_V1_PeerKind = .device, hub: String = "") -> Mesh_V1_Member {
        var m = Mesh_V1_Member()
        m.id = id
        m.kind = kind
        m.publicKey = key
        m.configHubID = hub
        return m
    }

    @Test func theKeyIndexFollowsReissuesAndRemovals() {
        var t = MemberTable([member("n1", key: "kn", kind: .node), member("d1", key: "k1", hub: "n1")])
        #expect(t.byKey["k1"] == "d1" && t.byKey["kn"] == "n1")
        t.put(member("d1", key: "k2", hub: "n1"))  // re-issued: a new key
        #expect(t.byKey["k1"] == nil && t.byKey["k2"] == "d1")
        t.drop("d1")
        #expect(t.byKey["k2"] == nil && t["d1"] == nil && t.count == 1)
        t.drop("nobody")
        #expect(t.count == 1)
    }

    @Test func theHubIndexFollowsAHubChange() {
        let n1 = member("n1", key: "a", kind: .node), n2 = member("n2", key: "b", kind: .node)
        var viewer = MeshState(viewer: "n3", revision: 1, settings: Mesh_V1_TenantSettings(), members: [n1, n2, member("d1", key: "k", hub: "n1")])
        // Routed through n1 (its config hub, not the current hub): the device's /32 rides on n1's peer.
        var s = viewer.settings
        s.hubNodeID = "n2"
        s.meshEnabled = true
        var u = Mesh_V1_PeersUpdated()
        u.revision = 2
        u.settings = s
        viewer.commit(viewer.prepare(u))
        var d = member("d1", key: "k", hub: "n1")
        d.active = true
        d.ipv4 = "100.64.0.9"
        d.ipv6 = "fd00::9"
        u = Mesh_V1_PeersUpdated()
        u.revision = 3
        u.upsert = d
        viewer.commit(viewer.prepare(u))
        #expect(viewer.peer(for: "n1")?.allowedIps.contains("100.64.0.9/32") == true)
        // The device's new config names n2 (the hub): nothing rides on n1 any more.
        d.configHubID = "n2"
        u.revision = 4
        u.upsert = d
        viewer.commit(viewer.prepare(u))
        #expect(viewer.peer(for: "n1")?.allowedIps.contains("100.64.0.9/32") == false)
    }

    @Test func aCopyIsIndependentOfTheOriginal() {
        let base = MemberTable((0..<1000).map { member("d\($0)", key: "k\($0)") })
        var a = base, b = base
        a.drop("d1")
        b.put(member("d1", key: "other"))
        #expect(base["d1"]?.publicKey == "k1" && base.byKey["k1"] == "d1")
        #expect(a["d1"] == nil && a.byKey["k1"] == nil && a.count == 999)
        #expect(b["d1"]?.publicKey == "other" && b.byKey["other"] == "d1" && b.byKey["k1"] == nil)
    }

    /// The peers read through the table's indexes and each node's view (its listed devices, followed
    /// through every change) are the peers of the full computation over every member, for every viewer,
    /// after every kind of change (random tenants and changes).
    @Test(arguments: 0..<8)
    func theIndexedPeersAreTheFullComputation(_ seed: Int) {
        var rng = SeededRNG(UInt64(seed + 1))
        let nodeIDs = (0..<12).map { "n\($0)" }
        // Configs list all but the last node: a viewer that no config ever lists is among them too.
        let listable = nodeIDs.dropLast()
        func randomMember(_ id: String) -> Mesh_V1_Member {
            var m = member(id, key: "k-\(id)-\(Int.random(in: 0..<3, using: &rng))",
                           kind: Int.random(in: 0..<10, using: &rng) == 0 ? .node : (id.hasPrefix("n") ? .node : .device))
            m.ipv4 = "100.64.0.\(Int.random(in: 1..<250, using: &rng))"
            m.ipv6 = "fd00::\(Int.random(in: 1..<250, using: &rng))"
            m.slug = id
            m.active = Int.random(in: 0..<5, using: &rng) != 0
            m.endpoint = m.kind == .node ? "10.0.0.\(Int.random(in: 1..<250, using: &rng)):51820" : ""
            // The config's hub: usually a node, sometimes one that never existed.
            m.configHubID = Int.random(in: 0..<8, using: &rng) == 0 ? "gone" : listable.randomElement(using: &rng)!
            m.configNodeIds = [m.configHubID] + (0..<Int.random(in: 0..<4, using: &rng)).map { _ in listable.randomElement(using: &rng)! }
            return m
        }
        var settings = Mesh_V1_TenantSettings()
        settings.meshEnabled = true
        settings.hubNodeID = "n0"
        settings.ipv4Prefix = "100.64.0.0/16"
        settings.domain = "quazzar.mesh"
        var table = MemberTable(nodeIDs.map(randomMember) + (0..<60).map { randomMember("d\($0)") })
        var views = nodeIDs.map { MeshState(viewer: $0, revision: 0, settings: settings, table: table) }
        for step in 0..<200 {
            var u = Mesh_V1_PeersUpdated()
            u.revision = UInt64(step + 1)
            switch Int.random(in: 0..<10, using: &rng) {
            case 0:
                let id = (nodeIDs + (0..<70).map { "d\($0)" }).randomElement(using: &rng)!
                table.drop(id)
                u.remove = Mesh_V1_MemberRemoval(id: id, kind: .device, publicKey: "")
            case 1:
                settings.hubNodeID = nodeIDs.randomElement(using: &rng)!
                u.settings = settings
            case 2:
                settings.meshEnabled.toggle()
                u.settings = settings
            default:
                let m = randomMember(Bool.random(using: &rng) ? nodeIDs.randomElement(using: &rng)! : "d\(Int.random(in: 0..<70, using: &rng))")
                table.put(m)
                u.upsert = m
            }
            for i in views.indices { views[i].commit(views[i].prepare(u)) }
            for (viewer, view) in zip(nodeIDs, views) {
                let full = PeerCatalog.peers(seenBy: viewer, settings: settings, members: table.members.values)
                let indexed = PeerCatalog.peers(seenBy: viewer, settings: settings, table: table, listing: table.devices(listing: viewer))
                #expect(indexed == full, "seed \(seed), step \(step), viewer \(viewer): the table's indexes")
                #expect(view.peers() == full, "seed \(seed), step \(step), viewer \(viewer): the view's own listed devices")
                let scanned = Set(table.members.values.filter { $0.kind == .device && $0.configNodeIds.contains(viewer) }.map(\.id))
                #expect(Set(table.devices(listing: viewer)) == scanned, "seed \(seed), step \(step), viewer \(viewer)")
                #expect(Set(view.listing) == scanned, "seed \(seed), step \(step), viewer \(viewer)")
                if indexed != full || view.peers() != full { return }
            }
        }
        // The nodes index names exactly the members that are nodes.
        #expect(Set(table.nodeIDs) == Set(table.members.values.filter { $0.kind == .node }.map(\.id)))
    }
}
