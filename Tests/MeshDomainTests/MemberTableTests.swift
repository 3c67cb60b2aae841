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
}
