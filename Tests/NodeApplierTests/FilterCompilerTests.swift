import Foundation
import Logging
import MeshClient
import MeshDomain
import MeshNet
import MeshProto
import MeshWireGuard
import NodeApplierCore
import Synchronization
import Testing

/// A deterministic generator (splitmix64), so a failing seed can be replayed.
struct Rand: RandomNumberGenerator {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func pick<T>(_ xs: [T]) -> T { xs[Int(next() % UInt64(xs.count))] }
}

/// A tenant for filter tests: users of both roles, devices of every type with tags, nodes with tags.
struct FilterWorld {
    var settings: Mesh_V1_TenantSettings
    var users: [(String, Mesh_V1_Role)] = []
    var members: [String: Mesh_V1_Member] = [:]
    var host = 1
    static let tags = ["web", "db", "ops", "lab-1"]

    init() {
        settings = Mesh_V1_TenantSettings()
        settings.domain = "quazzar.mesh"
        settings.ipv4Prefix = "100.64.0.0/16"
        settings.ipv6Prefix = "fd00:1:2::/48"
        settings.meshEnabled = true
    }

    static func uuid(_ r: inout Rand) -> String {
        let h = Array((0..<4).map { _ in String(format: "%08x", UInt32(truncatingIfNeeded: r.next())) }.joined())
        return "\(String(h[0..<8]))-\(String(h[8..<12]))-\(String(h[12..<16]))-\(String(h[16..<20]))-\(String(h[20..<32]))"
    }

    mutating func member(_ kind: Mesh_V1_PeerKind, _ r: inout Rand, owner: Int = 0, type: Mesh_V1_DeviceType = .laptop,
                         tags: [String] = []) -> Mesh_V1_Member {
        var m = Mesh_V1_Member()
        m.id = Self.uuid(&r)
        m.kind = kind
        m.ipv4 = "100.64.\(host / 256).\(host % 256)"
        m.ipv6 = "fd00:1:2::\(String(host, radix: 16))"
        host += 1
        m.slug = "m\(host)"
        m.active = true
        m.tags = tags.sorted()
        if kind == .device {
            m.ownerUserID = users[owner].0
            m.ownerRole = users[owner].1
            m.deviceType = type
        }
        members[m.id] = m
        return m
    }

    static func random(_ r: inout Rand, devices: Int = 30, nodes: Int = 4) -> FilterWorld {
        var w = FilterWorld()
        for i in 0..<4 { w.users.append((uuid(&r), i % 2 == 0 ? .admin : .owner)) }
        for _ in 0..<devices {
            var d = w.member(.device, &r, owner: Int(r.next() % 4), type: r.pick([.iphone, .android, .laptop, .other]),
                             tags: tags.filter { _ in r.next() % 4 == 0 })
            if r.next() % 10 == 0 {
                d.active = false
                w.members[d.id] = d
            }
        }
        for _ in 0..<nodes { _ = w.member(.node, &r, tags: tags.filter { _ in r.next() % 3 == 0 }) }
        return w
    }

    func selector(_ r: inout Rand) -> Mesh_V1_PolicySelector {
        var s = Mesh_V1_PolicySelector()
        let devices = members.values.filter { $0.kind == .device }.map(\.id).sorted()
        let nodes = members.values.filter { $0.kind == .node }.map(\.id).sorted()
        switch r.next() % 8 {
        case 0: s.all = true
        case 1: s.userID = r.pick(users).0
        case 2: s.role = r.pick([.owner, .admin])
        case 3: s.deviceType = r.pick([.iphone, .android, .laptop, .other])
        case 4: s.tag = r.pick(Self.tags + ["nobody"])
        case 5: s.deviceID = r.pick(devices)
        case 6: s.nodeID = r.pick(nodes)
        default: s.tag = r.pick(Self.tags)
        }
        return s
    }

    func policy(_ r: inout Rand, rules: Int, version: UInt64 = 1) -> Mesh_V1_PolicySet {
        var set = Mesh_V1_PolicySet()
        set.version = version
        for i in 0..<rules {
            var rule = Mesh_V1_PolicyRule()
            rule.id = Self.uuid(&r)
            rule.name = "rule \(i)"
            rule.sources = (0...(r.next() % 3)).map { _ in selector(&r) }
            rule.destinations = (0...(r.next() % 3)).map { _ in selector(&r) }
            for _ in 0..<(r.next() % 4) {
                var p = Mesh_V1_PolicyPort()
                switch r.next() % 5 {
                case 0: p.protocol = .icmp
                case 1: p.protocol = .udp
                case 2:
                    p.protocol = .tcp
                    p.first = UInt32(1 + r.next() % 100)
                    p.last = p.first + UInt32(r.next() % 10)
                default:
                    p.protocol = r.pick([.tcp, .udp])
                    p.first = r.pick([22, 80, 443, 8080])
                    p.last = p.first
                }
                rule.ports.append(p)
            }
            set.rules.append(rule)
        }
        return set
    }

    func flow(_ r: inout Rand, from a: Mesh_V1_Member, to b: Mesh_V1_Member, v6: Bool) -> TrackedFlow {
        let (proto, name, port): (Mesh_V1_PolicyProtocol, String, UInt32) = switch r.next() % 6 {
        case 0: (.icmp, v6 ? "icmpv6" : "icmp", 0)
        case 1: (.udp, "udp", UInt32(1 + r.next() % 120))
        case 2: (.unspecified, "gre", 0)
        case 3: r.next() % 2 == 0 ? (.tcp, "tcp", 53) : (.udp, "udp", 53)
        default: (.tcp, "tcp", r.pick([22, 80, 443, 8080, 5, 95]))
        }
        return TrackedFlow(proto: proto, protoName: name, source: IPAddress(v6 ? a.ipv6 : a.ipv4)!, destination: IPAddress(v6 ? b.ipv6 : b.ipv4)!, port: port)
    }
}

@Suite("Packet filter compiler", .timeLimit(.minutes(2)))
struct FilterCompilerTests {
    func sel(_ text: String) -> Mesh_V1_PolicySelector { try! PolicyText.selector(text, field: "s") }
    func port(_ text: String) -> Mesh_V1_PolicyPort { try! PolicyText.port(text, field: "p") }

    @Test func noRuleMeansNoFilter() {
        var r = Rand(1)
        let w = FilterWorld.random(&r)
        #expect(FilterPlan.compile(policy: Mesh_V1_PolicySet(), members: w.members.values, settings: w.settings, interface: "wg-quazzar0") == nil)
        #expect(FilterPlan.removal(table: "quazzar_wg_quazzar0") == "table inet quazzar_wg_quazzar0 {}\ndelete table inet quazzar_wg_quazzar0\n")
        #expect(FilterPlan.tableName(interface: "wg-quazzar0") == "quazzar_wg_quazzar0")
    }

    /// Selector sets are shared by every rule that names them; a side of several selectors gets a
    /// union set; each rule is one line per family and protocol.
    @Test func setsAreSharedAndLinesAreFew() throws {
        var r = Rand(2)
        var w = FilterWorld()
        w.users = [(FilterWorld.uuid(&r), .owner), (FilterWorld.uuid(&r), .admin)]
        let laptop = w.member(.device, &r, owner: 0, type: .laptop, tags: ["web"])
        let phone = w.member(.device, &r, owner: 1, type: .iphone)
        let node = w.member(.node, &r, tags: ["servers"])
        var set = Mesh_V1_PolicySet()
        set.version = 7
        set.rules = [
            Mesh_V1_PolicyRule.with { $0.id = "a"; $0.name = "a"; $0.sources = [sel("role:owner")]; $0.destinations = [sel("tag:servers")]
                $0.ports = [port("tcp:22"), port("tcp:80-90"), port("icmp")] },
            Mesh_V1_PolicyRule.with { $0.id = "b"; $0.name = "b"; $0.sources = [sel("role:owner"), sel("type:iphone")]
                $0.destinations = [sel("tag:servers")] },
        ]
        let plan = try #require(FilterPlan.compile(policy: set, members: w.members.values, settings: w.settings, interface: "wg-x"))
        #expect(plan.version == 7 && plan.table == "quazzar_wg_x")
        let names = Set(plan.sets.keys)
        #expect(names == ["nodes4", "nodes6", "r4_owner", "r6_owner", "g4_servers", "g6_servers", "t4_iphone", "t6_iphone", "s4_r1", "s6_r1"])
        #expect(plan.sets["r4_owner"]?.elements == [IPAddress(laptop.ipv4)!])
        #expect(plan.sets["s4_r1"]?.elements == [IPAddress(laptop.ipv4)!, IPAddress(phone.ipv4)!])
        #expect(plan.sets["g6_servers"]?.elements == [IPAddress(node.ipv6)!])
        #expect(plan.sets["nodes4"]?.elements == [IPAddress(node.ipv4)!])
        #expect(plan.lines.count == 2 * 2 + 2, "rule a: tcp and icmp per family; rule b: any per family")
        let script = plan.script()
        #expect(script.hasPrefix("table inet quazzar_wg_x {}\ndelete table inet quazzar_wg_x\ntable inet quazzar_wg_x {\n"))
        #expect(script.contains("\t\tip saddr @r4_owner ip daddr @g4_servers tcp dport { 22, 80-90 } accept\n"))
        #expect(script.contains("\t\tip6 saddr @r6_owner ip6 daddr @g6_servers meta l4proto ipv6-icmp accept\n"))
        #expect(script.contains("\t\tip saddr @s4_r1 ip daddr @g4_servers accept\n"))
        #expect(script.contains("\t\tct state established,related accept\n"))
        #expect(script.contains("iifname \"wg-x\" jump mesh") && script.contains("oifname \"wg-x\" jump mesh"))
        #expect(script.contains("elements = { \(laptop.ipv4), \(phone.ipv4) }"))
    }

    /// What the compiled filter accepts is exactly what the policy allows, for every pair of members,
    /// both families and every kind of traffic. (The real nftables runs the same lines: `FilterInNamespaceTests`.)
    @Test(arguments: [UInt64(11), 12, 13, 14, 15])
    func theFilterAcceptsExactlyWhatThePolicyAllows(seed: UInt64) throws {
        var r = Rand(seed)
        let w = FilterWorld.random(&r)
        let set = w.policy(&r, rules: Int(1 + r.next() % 25))
        let policy = AccessPolicy(set)
        let plan = try #require(FilterPlan.compile(policy: set, members: w.members.values, settings: w.settings, interface: "wg0"))
        let all = w.members.values.sorted { $0.id < $1.id }
        var allowed = 0, refused = 0
        for a in all {
            for b in all where a.id != b.id {
                for _ in 0..<3 {
                    let f = w.flow(&r, from: a, to: b, v6: r.next() % 2 == 0)
                    let verdict = policy.verdict(from: a, to: b, traffic: AccessPolicy.Traffic(f.proto, port: f.port), settings: w.settings)
                    #expect(plan.allows(f) == verdict.allowed, "seed \(seed): \(f) → \(verdict)")
                    if verdict.allowed { allowed += 1 } else { refused += 1 }
                }
            }
        }
        #expect(allowed > 0 && refused > 0, "seed \(seed) tested one side only")
    }

    /// A member change updates the sets to exactly what a fresh compile gives.
    @Test(arguments: [UInt64(21), 22, 23])
    func memberChangesMatchAFreshCompile(seed: UInt64) throws {
        var r = Rand(seed)
        var w = FilterWorld.random(&r)
        let set = w.policy(&r, rules: 20)
        var plan = try #require(FilterPlan.compile(policy: set, members: w.members.values, settings: w.settings, interface: "wg0"))
        var sawAdded = false, sawRemoved = false
        for step in 0..<60 {
            let ids = w.members.keys.sorted()
            let before: Mesh_V1_Member?
            var after: Mesh_V1_Member?
            switch r.next() % 5 {
            case 0:
                before = nil
                after = w.member(r.pick([.device, .node]), &r, owner: Int(r.next() % 4), type: .android, tags: [r.pick(FilterWorld.tags)])
            case 1:
                let id = r.pick(ids)
                before = w.members[id]
                w.members[id] = nil
            case 2:
                let id = r.pick(ids)
                before = w.members[id]
                after = before
                after?.active.toggle()
            default:
                let id = r.pick(ids)
                before = w.members[id]
                after = before
                after?.tags = FilterWorld.tags.filter { _ in r.next() % 2 == 0 }
            }
            if let after { w.members[after.id] = after }
            let changes = plan.update(before: before, after: after, settings: w.settings)
            sawAdded = sawAdded || !changes.added.isEmpty
            sawRemoved = sawRemoved || !changes.removed.isEmpty
            let fresh = try #require(FilterPlan.compile(policy: set, members: w.members.values, settings: w.settings, interface: "wg0"))
            #expect(plan == fresh, "seed \(seed) step \(step)")
            if plan != fresh { return }
        }
        #expect(sawAdded && sawRemoved)
    }

    @Test func elementScriptsTouchOnlyWhatChanged() throws {
        var r = Rand(4)
        var w = FilterWorld()
        w.users = [(FilterWorld.uuid(&r), .owner)]
        var d = w.member(.device, &r, tags: [])
        let set = Mesh_V1_PolicySet.with { $0.rules = [Mesh_V1_PolicyRule.with { $0.id = "a"; $0.name = "a"; $0.sources = [sel("tag:web")]; $0.destinations = [sel("*")] }] }
        var plan = try #require(FilterPlan.compile(policy: set, members: w.members.values, settings: w.settings, interface: "wg0"))
        let before = d
        d.tags = ["web"]
        let changes = plan.update(before: before, after: d, settings: w.settings)
        #expect(changes.added == ["g4_web": [IPAddress(d.ipv4)!], "g6_web": [IPAddress(d.ipv6)!]] && changes.removed.isEmpty)
        #expect(plan.script(for: changes) == "add element inet quazzar_wg0 g4_web { \(d.ipv4) }\nadd element inet quazzar_wg0 g6_web { \(d.ipv6) }\n")
        let back = plan.update(before: d, after: before, settings: w.settings)
        #expect(plan.script(for: back) == "delete element inet quazzar_wg0 g4_web { \(d.ipv4) }\ndelete element inet quazzar_wg0 g6_web { \(d.ipv6) }\n")
        #expect(plan.update(before: before, after: before, settings: w.settings).isEmpty)
    }

    @Test func conntrackLinesParse() throws {
        let tcp = try #require(TrackedFlow(conntrackLine: "tcp      6 431999 ESTABLISHED src=100.64.16.5 dst=100.64.0.1 sport=43906 dport=22 src=100.64.0.1 dst=100.64.16.5 sport=22 dport=43906 [ASSURED] mark=0 use=1"))
        #expect(tcp == TrackedFlow(proto: .tcp, protoName: "tcp", source: IPAddress("100.64.16.5")!, destination: IPAddress("100.64.0.1")!, port: 22))
        #expect(tcp.deleteArguments == ["-D", "-p", "tcp", "-s", "100.64.16.5", "-d", "100.64.0.1", "--dport", "22"])
        let udp = try #require(TrackedFlow(conntrackLine: "udp      17 29 src=fd00:1::5 dst=fd00:1::1 sport=44907 dport=53 [UNREPLIED] src=fd00:1::1 dst=fd00:1::5 sport=53 dport=44907 mark=0 use=1"))
        #expect(udp.proto == .udp && udp.port == 53 && udp.source == IPAddress("fd00:1::5"))
        let icmp = try #require(TrackedFlow(conntrackLine: "icmpv6   58 29 src=fd00:1::1 dst=fd00:1::2 type=128 code=0 id=5665 src=fd00:1::2 dst=fd00:1::1 type=129 code=0 id=5665 mark=0 use=1"))
        #expect(icmp.proto == .icmp && icmp.port == 0 && icmp.deleteArguments == ["-D", "-p", "icmpv6", "-s", "fd00:1::1", "-d", "fd00:1::2"])
        #expect(TrackedFlow(conntrackLine: "conntrack v1.4.7 (conntrack-tools): 4 flow entries have been shown.") == nil)
        #expect(TrackedFlow(conntrackLine: "") == nil)
    }
}

/// The enforcer's decisions against a recording filter: what it applies, when, and which flows it cuts.
@Suite("Policy enforcer", .timeLimit(.minutes(1)))
struct PolicyEnforcerTests {
    func sel(_ text: String) -> Mesh_V1_PolicySelector { try! PolicyText.selector(text, field: "s") }

    func setup() -> (PolicyEnforcer, RecordingPacketFilter, FilterWorld, Rand) {
        var r = Rand(9)
        var w = FilterWorld()
        w.users = [(FilterWorld.uuid(&r), .owner), (FilterWorld.uuid(&r), .owner)]
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let f = RecordingPacketFilter()
        return (PolicyEnforcer(filter: f, interface: "wg0", logger: logger), f, w, r)
    }

    func state(_ w: FilterWorld, _ p: Mesh_V1_PolicySet = Mesh_V1_PolicySet(), viewer: String = "n") -> MeshState {
        MeshState(viewer: viewer, revision: 1, settings: w.settings, members: w.members.values, policy: p)
    }

    @Test func noRuleRemovesTheTableOnceAndThenStaysQuiet() async throws {
        let (e, f, w, _) = setup()
        try await e.sync(state(w))
        try await e.sync(state(w))
        #expect(f.record.withLock { $0.scripts } == [FilterPlan.removal(table: "quazzar_wg0")])
        #expect(e.status().state == "none")
    }

    @Test func policiesReplaceTheFilterAndMemberChangesTouchSets() async throws {
        var (e, f, w, r) = setup()
        let laptop = w.member(.device, &r, owner: 0)
        let phone = w.member(.device, &r, owner: 1)
        let node = w.member(.node, &r, tags: ["servers"])
        let policy = Mesh_V1_PolicySet.with { $0.version = 2; $0.rules = [Mesh_V1_PolicyRule.with {
            $0.id = "r"; $0.name = "ssh"; $0.sources = [sel("user:\(w.users[0].0)")]; $0.destinations = [sel("tag:servers")]
            $0.ports = [try! PolicyText.port("tcp:22", field: "")]
        }] }
        // Open flows: the laptop's SSH (allowed), the phone's SSH (refused), the laptop's HTTP (refused).
        let ssh = TrackedFlow(proto: .tcp, protoName: "tcp", source: IPAddress(laptop.ipv4)!, destination: IPAddress(node.ipv4)!, port: 22)
        let phoneSSH = TrackedFlow(proto: .tcp, protoName: "tcp", source: IPAddress(phone.ipv4)!, destination: IPAddress(node.ipv4)!, port: 22)
        let http = TrackedFlow(proto: .tcp, protoName: "tcp", source: IPAddress(laptop.ipv6)!, destination: IPAddress(node.ipv6)!, port: 80)
        f.record.withLock { $0.flows = [ssh, phoneSSH, http] }
        var mesh = state(w, policy)
        try await e.sync(mesh)
        #expect(f.record.withLock { $0.scripts.count } == 1)
        #expect(f.record.withLock { Set($0.forgotten) } == [phoneSSH, http], "refused flows are cut, the allowed one survives")
        #expect(e.status().state == "enforced" && e.status().version == 2 && e.status().rules == 1)

        // The node loses its tag: the SSH flow goes too, with a two-line element script.
        var untagged = node
        untagged.tags = []
        w.members[node.id] = untagged
        var u = Mesh_V1_PeersUpdated()
        u.upsert = untagged
        mesh = state(w, policy)
        try await e.apply(u, before: node, mesh: mesh)
        let last = try #require(f.record.withLock { $0.scripts.last })
        #expect(last == "delete element inet quazzar_wg0 g4_servers { \(node.ipv4) }\ndelete element inet quazzar_wg0 g6_servers { \(node.ipv6) }\n")
        #expect(f.record.withLock { $0.forgotten.contains(ssh) })

        // A member change that does not touch any set applies nothing.
        let count = f.record.withLock { $0.scripts.count }
        var renamed = phone
        renamed.slug = "renamed"
        w.members[phone.id] = renamed
        u.upsert = renamed
        try await e.apply(u, before: phone, mesh: state(w, policy))
        #expect(f.record.withLock { $0.scripts.count } == count)

        // The same policy again: nothing to do.
        try await e.sync(state(w, policy))
        #expect(f.record.withLock { $0.scripts.count } == count)

        // No rule any more: the table goes.
        try await e.sync(state(w, Mesh_V1_PolicySet.with { $0.version = 3 }))
        #expect(f.record.withLock { $0.scripts.last } == FilterPlan.removal(table: "quazzar_wg0"))
        #expect(e.status().state == "none" && e.status().version == 3)
    }

    @Test func aFailureKeepsTheOldFilterAndIsReported() async throws {
        var (e, f, w, r) = setup()
        _ = w.member(.device, &r, owner: 0)
        let policy = Mesh_V1_PolicySet.with { $0.version = 5; $0.rules = [Mesh_V1_PolicyRule.with {
            $0.id = "r"; $0.name = "all"; $0.sources = [sel("*")]; $0.destinations = [sel("*")]
        }] }
        f.record.withLock { $0.failNext = "nft: syntax error" }
        await #expect(throws: PacketFilterError.self) { try await e.sync(state(w, policy)) }
        #expect(e.status().state == "failed" && e.status().error.contains("syntax error"))
        // The retry applies it whole.
        try await e.sync(state(w, policy))
        #expect(e.status().state == "enforced" && e.status().error.isEmpty)
        #expect(f.record.withLock { $0.scripts.count } == 1)

        // An element update that fails falls back to the whole filter.
        let before = w.members.values.first!
        var after = before
        after.active = false
        w.members[after.id] = after
        f.record.withLock { $0.failNext = "nft: no such element" }
        var u = Mesh_V1_PeersUpdated()
        u.upsert = after
        try await e.apply(u, before: before, mesh: state(w, policy))
        let last = try #require(f.record.withLock { $0.scripts.last })
        #expect(last.hasPrefix("table inet quazzar_wg0 {}\ndelete table"), "replaced whole after the element update failed")
    }

    @Test func enforcementOffTracksThePolicyOnly() async throws {
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let e = PolicyEnforcer(filter: nil, interface: "wg0", logger: logger)
        let w = FilterWorld()
        try await e.sync(MeshState(viewer: "n", revision: 1, settings: w.settings, members: [],
                                   policy: Mesh_V1_PolicySet.with { $0.version = 4; $0.rules = [Mesh_V1_PolicyRule()] }))
        #expect(e.status().state == "disabled" && e.status().version == 4)
    }
}
