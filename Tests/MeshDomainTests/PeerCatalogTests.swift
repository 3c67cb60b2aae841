import Foundation
import MeshDomain
import MeshProto
import Testing

/// A small tenant to build views from.
struct Tenant {
    var settings = Mesh_V1_TenantSettings()
    var members: [String: Mesh_V1_Member] = [:]
    var nextHost = 1

    init() {
        settings.domain = "quazzar.mesh"
        settings.nodeKeepalive = 25
        settings.ipv4Prefix = "100.64.0.0/16"
        settings.ipv6Prefix = "fd00:1:2::/48"
        settings.meshEnabled = true
    }

    mutating func address() -> (String, String) {
        defer { nextHost += 1 }
        return ("100.64.\(nextHost / 256).\(nextHost % 256)", "fd00:1:2::\(String(nextHost, radix: 16))")
    }

    @discardableResult
    mutating func node(_ name: String) -> Mesh_V1_Member {
        var m = Mesh_V1_Member()
        m.id = "node-\(name)"
        m.kind = .node
        m.publicKey = key(m.id)
        (m.ipv4, m.ipv6) = address()
        m.slug = name
        m.endpoint = "192.0.2.\(nextHost):51820"
        m.active = true
        members[m.id] = m
        if settings.hubNodeID.isEmpty { settings.hubNodeID = m.id }
        return m
    }

    /// A device whose config is made now: the current hub and up to `max` nodes, oldest first.
    @discardableResult
    mutating func device(_ name: String, max: Int = 8) -> Mesh_V1_Member {
        var m = Mesh_V1_Member()
        m.id = "dev-\(name)"
        m.kind = .device
        m.publicKey = key(m.id)
        (m.ipv4, m.ipv6) = address()
        m.slug = name
        m.active = true
        let config = PeerCatalog.deviceConfig(nodesByAge: nodesByAge, settings: settings, maxNodes: max)
        m.configHubID = config.first?.node.id ?? ""
        m.configNodeIds = config.map(\.node.id)
        members[m.id] = m
        return m
    }

    var nodesByAge: [Mesh_V1_Member] {
        members.values.filter { $0.kind == .node }.sorted { $0.ipv4.compare($1.ipv4, options: .numeric) == .orderedAscending }
    }

    func key(_ id: String) -> String {
        var bytes = [UInt8](repeating: 0, count: 32)
        for (i, b) in id.utf8.enumerated() { bytes[i % 32] &+= b &* UInt8(truncatingIfNeeded: i + 1) }
        return Data(bytes).base64EncodedString()
    }

    func peers(seenBy viewer: String) -> [String: Mesh_V1_Peer] {
        Dictionary(uniqueKeysWithValues: PeerCatalog.peers(seenBy: viewer, settings: settings, members: members.values).map { ($0.id, $0) })
    }
}

@Suite("PeerCatalog", .timeLimit(.minutes(1)))
struct PeerCatalogTests {
    @Test func aDeviceConfigListsTheHubWithTheTenantPrefixAndTheOtherNodesWithTheirOwnAddresses() {
        var t = Tenant()
        let hub = t.node("hub"), n2 = t.node("two")
        let config = PeerCatalog.deviceConfig(nodesByAge: t.nodesByAge, settings: t.settings, maxNodes: 8)
        #expect(config.map(\.node.id) == [hub.id, n2.id])
        #expect(config[0].isHub && config[0].allowedIPs == ["\(hub.ipv4)/32", "\(hub.ipv6)/128", "100.64.0.0/16", "fd00:1:2::/48"])
        #expect(!config[1].isHub && config[1].allowedIPs == ["\(n2.ipv4)/32", "\(n2.ipv6)/128"])
        // At most `maxNodes` nodes, the hub always first.
        for i in 0..<10 { t.node("n\(i)") }
        let capped = PeerCatalog.deviceConfig(nodesByAge: t.nodesByAge, settings: t.settings, maxNodes: 4)
        #expect(capped.count == 4 && capped[0].node.id == hub.id)
        // No hub, no config.
        var empty = Tenant()
        #expect(PeerCatalog.deviceConfig(nodesByAge: [], settings: empty.settings, maxNodes: 8).isEmpty)
        empty.settings.hubNodeID = "gone"
        #expect(PeerCatalog.deviceConfig(nodesByAge: t.nodesByAge, settings: empty.settings, maxNodes: 8).isEmpty)
    }

    @Test func nodesHoldListedDevicesDirectlyAndReachTheRestThroughTheHub() {
        var t = Tenant()
        let hub = t.node("hub"), n2 = t.node("two")
        let phone = t.device("phone")
        let late = t.node("late")
        // The hub and n2 hold the phone (its config lists them); the late node does not, and reaches
        // it through the hub's peer, which carries the tenant prefix.
        #expect(t.peers(seenBy: hub.id)[phone.id]?.allowedIps == ["\(phone.ipv4)/32", "\(phone.ipv6)/128"])
        #expect(t.peers(seenBy: n2.id)[phone.id] != nil)
        let fromLate = t.peers(seenBy: late.id)
        #expect(fromLate[phone.id] == nil)
        #expect(fromLate[hub.id]?.hub == true && fromLate[hub.id]?.allowedIps.contains("100.64.0.0/16") == true)
        #expect(fromLate[n2.id]?.allowedIps == ["\(n2.ipv4)/32", "\(n2.ipv6)/128"])
        // The hub itself holds no prefix route: it is the end of the line.
        #expect(t.peers(seenBy: hub.id).values.allSatisfy { !$0.allowedIps.contains("100.64.0.0/16") })
        // DNS names and keepalive come from the tenant's settings.
        #expect(fromLate[hub.id]?.dnsName == "hub.quazzar.mesh" && fromLate[hub.id]?.persistentKeepalive == 25)
    }

    @Test func afterAHubChangeDevicesOfTheOldHubAreRoutedThroughIt() {
        var t = Tenant()
        let old = t.node("old"), n2 = t.node("two")
        let phone = t.device("phone", max: 1)  // lists the old hub only
        let late = t.node("late")
        t.settings.hubNodeID = late.id
        // n2 and the new hub do not hold the phone: its /32 rides on the old hub's peer.
        for viewer in [n2.id, late.id] {
            let p = t.peers(seenBy: viewer)
            #expect(p[phone.id] == nil)
            #expect(p[old.id]?.allowedIps == ["\(old.ipv4)/32", "\(old.ipv6)/128", "\(phone.ipv4)/32", "\(phone.ipv6)/128"], "\(viewer)")
        }
        // The new hub carries the prefix for the others, not for itself.
        #expect(t.peers(seenBy: n2.id)[late.id]?.allowedIps.contains("100.64.0.0/16") == true)
        #expect(t.peers(seenBy: old.id)[phone.id] != nil, "the old hub still holds it")
        // Once the old hub is gone, nobody can reach the phone (its config is outdated).
        t.members.removeValue(forKey: old.id)
        #expect(t.peers(seenBy: n2.id).values.allSatisfy { !$0.allowedIps.contains("\(phone.ipv4)/32") })
    }

    @Test func suspendedDevicesAndATurnedOffMeshHaveNoPeer() {
        var t = Tenant()
        let hub = t.node("hub")
        var phone = t.device("phone")
        phone.active = false
        t.members[phone.id] = phone
        #expect(t.peers(seenBy: hub.id)[phone.id] == nil)
        #expect(!PeerCatalog.isNamed(phone, settings: t.settings))
        phone.active = true
        t.members[phone.id] = phone
        t.settings.meshEnabled = false
        #expect(t.peers(seenBy: hub.id)[phone.id] == nil)
        #expect(PeerCatalog.isNamed(hub, settings: t.settings), "nodes keep their names")
    }

    /// No CIDR appears twice on any node, whatever the history: the property routing relies on.
    @Test(arguments: [UInt64(1), 2, 3, 42, 1000])
    func noAddressAppearsTwiceOnAnyNode(seed: UInt64) {
        var rng = SeededRNG(seed)
        var t = Tenant()
        t.node("first")
        for step in 0..<120 {
            switch rng.next() % 10 {
            case 0...1: t.node("n\(step)")
            case 2...6: t.device("d\(step)", max: Int(rng.next() % 4) + 1)
            case 7:
                let nodes = t.nodesByAge
                if nodes.count > 1 { t.settings.hubNodeID = nodes[Int(rng.next() % UInt64(nodes.count))].id }
            default:
                let devices = t.members.values.filter { $0.kind == .device }
                if let d = devices.randomElement(using: &rng) { t.members.removeValue(forKey: d.id) }
            }
        }
        for viewer in t.nodesByAge {
            let all = t.peers(seenBy: viewer.id).values.flatMap(\.allowedIps)
            #expect(Set(all).count == all.count, "seed \(seed): \(viewer.id) holds a CIDR twice")
        }
    }

    @Test func configChangesThatOutdateAConfig() {
        #expect(PeerCatalog.ConfigChange.nodeRemoved(name: "edge").reason(listedAsHub: true) == "its hub edge was removed")
        #expect(PeerCatalog.ConfigChange.nodeRemoved(name: "edge").reason(listedAsHub: false) == "node edge was removed")
        #expect(PeerCatalog.ConfigChange.nodeMoved(name: "edge", endpoint: "1.2.3.4:5").reason(listedAsHub: false) == "node edge moved to 1.2.3.4:5")
        #expect(PeerCatalog.ConfigChange.hubChanged(from: "a", to: "b").reason(listedAsHub: true) != nil)
        #expect(PeerCatalog.ConfigChange.hubChanged(from: "a", to: "b").reason(listedAsHub: false) == nil)
    }
}

/// A small deterministic generator (splitmix64) so a failing seed can be replayed.
struct SeededRNG: RandomNumberGenerator {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
