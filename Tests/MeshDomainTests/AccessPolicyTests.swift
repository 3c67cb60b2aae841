import Foundation
import MeshDomain
import MeshProto
import Testing

/// A tenant for policy tests: users of both roles, devices of every type with tags, nodes with tags.
struct PolicyWorld {
    var settings = Mesh_V1_TenantSettings()
    var users: [(id: String, role: Mesh_V1_Role)] = []
    var members: [String: Mesh_V1_Member] = [:]
    var host = 1
    static let tags = ["web", "db", "ops", "lab-1"]

    init() {
        settings.domain = "quazzar.mesh"
        settings.ipv4Prefix = "100.64.0.0/16"
        settings.ipv6Prefix = "fd00:1:2::/48"
        settings.meshEnabled = true
    }

    static func uuid(_ rng: inout SeededRNG) -> String {
        let h = (0..<4).map { _ in String(format: "%08x", UInt32(truncatingIfNeeded: rng.next())) }.joined()
        let c = Array(h)
        return "\(String(c[0..<8]))-\(String(c[8..<12]))-\(String(c[12..<16]))-\(String(c[16..<20]))-\(String(c[20..<32]))"
    }

    mutating func addresses() -> (String, String) {
        defer { host += 1 }
        return ("100.64.\(host / 256).\(host % 256)", "fd00:1:2::\(String(host, radix: 16))")
    }

    mutating func user(_ role: Mesh_V1_Role, _ rng: inout SeededRNG) -> String {
        let id = Self.uuid(&rng)
        users.append((id, role))
        return id
    }

    @discardableResult
    mutating func device(owner: Int, type: Mesh_V1_DeviceType, tags: [String] = [], _ rng: inout SeededRNG) -> Mesh_V1_Member {
        var m = Mesh_V1_Member()
        m.id = Self.uuid(&rng)
        m.kind = .device
        (m.ipv4, m.ipv6) = addresses()
        m.slug = "d\(host)"
        m.active = true
        m.ownerUserID = users[owner].id
        m.ownerRole = users[owner].role
        m.deviceType = type
        m.tags = tags.sorted()
        members[m.id] = m
        return m
    }

    @discardableResult
    mutating func node(tags: [String] = [], _ rng: inout SeededRNG) -> Mesh_V1_Member {
        var m = Mesh_V1_Member()
        m.id = Self.uuid(&rng)
        m.kind = .node
        (m.ipv4, m.ipv6) = addresses()
        m.slug = "n\(host)"
        m.active = true
        m.tags = tags.sorted()
        members[m.id] = m
        return m
    }

    /// A random world of `users` users, `devices` devices and `nodes` nodes.
    static func random(_ rng: inout SeededRNG, users: Int = 4, devices: Int = 24, nodes: Int = 4) -> PolicyWorld {
        var w = PolicyWorld()
        for i in 0..<users { _ = w.user(i % 3 == 0 ? .admin : .owner, &rng) }
        let types: [Mesh_V1_DeviceType] = [.iphone, .android, .laptop, .other]
        for _ in 0..<devices {
            let tags = tags.filter { _ in rng.next() % 4 == 0 }
            var d = w.device(owner: Int(rng.next() % UInt64(users)), type: types[Int(rng.next() % 4)], tags: tags, &rng)
            if rng.next() % 10 == 0 {
                d.active = false
                w.members[d.id] = d
            }
        }
        for _ in 0..<nodes { w.node(tags: tags.filter { _ in rng.next() % 3 == 0 }, &rng) }
        return w
    }

    /// A random selector naming something of this world (or, now and then, something it does not have).
    func selector(_ rng: inout SeededRNG) -> Mesh_V1_PolicySelector {
        var s = Mesh_V1_PolicySelector()
        let devices = members.values.filter { $0.kind == .device }.sorted { $0.id < $1.id }
        let nodes = members.values.filter { $0.kind == .node }.sorted { $0.id < $1.id }
        switch rng.next() % 8 {
        case 0: s.all = true
        case 1: s.userID = users[Int(rng.next() % UInt64(users.count))].id
        case 2: s.role = rng.next() % 2 == 0 ? .owner : .admin
        case 3: s.deviceType = [.iphone, .android, .laptop, .other][Int(rng.next() % 4)]
        case 4: s.tag = (Self.tags + ["nobody"])[Int(rng.next() % 5)]
        case 5: s.deviceID = devices[Int(rng.next() % UInt64(devices.count))].id
        case 6: s.nodeID = nodes[Int(rng.next() % UInt64(nodes.count))].id
        default: s.tag = Self.tags[Int(rng.next() % 4)]
        }
        return s
    }

    /// A random policy of `count` rules.
    func policy(_ rng: inout SeededRNG, rules count: Int, version: UInt64 = 1) -> Mesh_V1_PolicySet {
        var set = Mesh_V1_PolicySet()
        set.version = version
        for i in 0..<count {
            var r = Mesh_V1_PolicyRule()
            r.id = Self.uuid(&rng)
            r.name = "rule \(i)"
            r.sources = (0...(rng.next() % 3)).map { _ in selector(&rng) }
            r.destinations = (0...(rng.next() % 3)).map { _ in selector(&rng) }
            for _ in 0..<(rng.next() % 4) {
                var p = Mesh_V1_PolicyPort()
                switch rng.next() % 5 {
                case 0: p.protocol = .icmp
                case 1: p.protocol = .udp
                case 2:
                    p.protocol = .tcp
                    p.first = UInt32(1 + rng.next() % 100)
                    p.last = p.first + UInt32(rng.next() % 10)
                default:
                    p.protocol = .tcp
                    p.first = [22, 80, 443, 8080][Int(rng.next() % 4)]
                    p.last = p.first
                }
                r.ports.append(p)
            }
            set.rules.append(r)
        }
        return set
    }

    static func traffic(_ rng: inout SeededRNG) -> AccessPolicy.Traffic {
        switch rng.next() % 6 {
        case 0: AccessPolicy.Traffic(.icmp)
        case 1: AccessPolicy.Traffic(.udp, port: UInt32(1 + rng.next() % 120))
        case 2: AccessPolicy.Traffic(.unspecified)
        case 3: AccessPolicy.Traffic(.tcp, port: 53)
        default: AccessPolicy.Traffic(.tcp, port: [22, 80, 443, 8080, 5, 95][Int(rng.next() % 6)])
        }
    }
}

@Suite("Access policies", .timeLimit(.minutes(1)))
struct AccessPolicyTests {
    func rule(_ name: String, from: [String], to: [String], ports: [String] = []) throws -> Mesh_V1_PolicyRule {
        var r = Mesh_V1_PolicyRule()
        r.id = UUID().uuidString.lowercased()
        r.name = name
        r.sources = try from.map { try PolicyText.selector($0, field: "from") }
        r.destinations = try to.map { try PolicyText.selector($0, field: "to") }
        r.ports = try ports.map { try PolicyText.port($0, field: "ports") }
        return r
    }

    func field(_ body: () throws -> Void) -> String? {
        do {
            try body()
            return nil
        } catch let e as MeshError {
            if case .invalidArgument(let f, _) = e { return f }
            return "\(e)"
        } catch {
            return "\(error)"
        }
    }

    // MARK: The scenario of the issue

    /// User A's laptop may reach the node on TCP 22 only; A and B may not reach each other; B's phone
    /// may reach A's laptop on one port. Every pair, both directions.
    @Test func theIssuesScenario() throws {
        var rng = SeededRNG(1)
        var w = PolicyWorld()
        let a = w.user(.owner, &rng), b = w.user(.owner, &rng)
        _ = (a, b)
        let laptop = w.device(owner: 0, type: .laptop, &rng)
        let phoneA = w.device(owner: 0, type: .iphone, &rng)
        let phone = w.device(owner: 1, type: .android, &rng)
        let node = w.node(tags: ["servers"], &rng)
        let policy = AccessPolicy(Mesh_V1_PolicySet.with {
            $0.version = 3
            $0.rules = [
                try! rule("ssh", from: ["device:\(laptop.id)"], to: ["tag:servers"], ports: ["tcp:22"]),
                try! rule("phone to laptop", from: ["device:\(phone.id)"], to: ["device:\(laptop.id)"], ports: ["tcp:8080"]),
            ]
        })
        let s = w.settings
        func allowed(_ x: Mesh_V1_Member, _ y: Mesh_V1_Member, _ t: AccessPolicy.Traffic) -> Bool {
            policy.verdict(from: x, to: y, traffic: t, settings: s).allowed
        }
        #expect(allowed(laptop, node, .init(.tcp, port: 22)))
        #expect(policy.verdict(from: laptop, to: node, traffic: .init(.tcp, port: 22), settings: s) == .rule(policy.rules[0]))
        #expect(!allowed(laptop, node, .init(.tcp, port: 23)))
        #expect(!allowed(laptop, node, .init(.udp, port: 22)))
        #expect(!allowed(laptop, node, .init(.icmp)))
        #expect(!allowed(node, laptop, .init(.tcp, port: 22)), "directional: the node may not open flows to the laptop")
        #expect(allowed(phone, laptop, .init(.tcp, port: 8080)))
        #expect(!allowed(laptop, phone, .init(.tcp, port: 8080)))
        #expect(!allowed(phone, laptop, .init(.tcp, port: 8081)))
        #expect(!allowed(phone, laptop, .init(.icmp)))
        #expect(!allowed(phoneA, phone, .init(.icmp)))
        #expect(!allowed(phone, phoneA, .init(.tcp, port: 8080)))
        #expect(!allowed(phone, node, .init(.tcp, port: 22)))
        // Every node's mesh DNS stays open.
        #expect(policy.verdict(from: phone, to: node, traffic: .init(.udp, port: 53), settings: s) == .meshDNS)
        #expect(!allowed(phone, laptop, .init(.udp, port: 53)), "only nodes serve the mesh DNS")
        // No rule: everything.
        #expect(AccessPolicy(Mesh_V1_PolicySet()).verdict(from: phone, to: laptop, traffic: .init(.unspecified), settings: s) == .open)
        // A device out of the mesh reaches nothing, rule or not.
        var off = laptop
        off.active = false
        #expect(!policy.verdict(from: off, to: node, traffic: .init(.tcp, port: 22), settings: s).allowed)
        #expect(policy.mayReach(from: laptop, to: node) && policy.mayReach(from: phone, to: laptop))
        #expect(!policy.mayReach(from: laptop, to: phone) && !policy.mayReach(from: node, to: laptop))
    }

    // MARK: Text forms and validation

    @Test func textFormsRoundTrip() throws {
        let id = "0b6c1f2e-1111-4222-8333-944455556666"
        for text in ["*", "user:\(id)", "role:admin", "role:owner", "type:laptop", "type:iphone", "tag:web-1", "device:\(id)", "node:\(id)"] {
            #expect(PolicyText.text(try PolicyText.selector(text, field: "s")) == text)
        }
        #expect(PolicyText.text(try PolicyText.selector("USER:\(id.uppercased())", field: "s")) == "user:\(id)", "ids are lowercased")
        #expect(PolicyText.text(try PolicyText.selector(" tag:Web ", field: "s")) == "tag:web")
        for text in ["tcp", "udp", "icmp", "tcp:22", "udp:8000-8100", "tcp:1-65535"] {
            #expect(PolicyText.text(try PolicyText.port(text, field: "p")) == text)
        }
        #expect(PolicyText.text(try PolicyText.port("TCP:22-22", field: "p")) == "tcp:22")
    }

    @Test(arguments: [
        ("", "sources[0]"), ("user", "sources[0]"), ("user:nope", "sources[0]"), ("role:root", "sources[0]"), ("type:toaster", "sources[0]"),
        ("tag:-bad", "sources[0]"), ("tag:", "sources[0]"), ("tag:has space", "sources[0]"), ("group:x", "sources[0]"),
        ("tag:" + String(repeating: "a", count: 64), "sources[0]"),
    ])
    func badSelectorsNameTheirField(text: String, expected: String) {
        #expect(field { _ = try PolicyText.selector(text, field: "sources[0]") } == expected, "\(text)")
    }

    @Test(arguments: ["sctp", "tcp:0", "tcp:65536", "tcp:9-8", "icmp:8", "tcp:ssh", "udp:1-2-3", "tcp:-1", ""])
    func badPortsNameTheirField(text: String) {
        #expect(field { _ = try PolicyText.port(text, field: "ports[3]") } == "ports[3]", "\(text)")
    }

    @Test func rulesAreCheckedWithFieldPaths() throws {
        let ok = try rule("web", from: ["role:owner"], to: ["tag:web"], ports: ["tcp:443"])
        #expect(try PolicyValidation.rule(ok, path: "rules[2].") == ok)
        var r = ok
        r.name = "  "
        #expect(field { _ = try PolicyValidation.rule(r, path: "rules[2].") } == "rules[2].name")
        r = ok
        r.sources = []
        #expect(field { _ = try PolicyValidation.rule(r, path: "rules[2].") } == "rules[2].sources")
        r = ok
        r.destinations = Array(repeating: try PolicyText.selector("*", field: ""), count: 17)
        #expect(field { _ = try PolicyValidation.rule(r, path: "rules[2].") } == "rules[2].destinations")
        r = ok
        r.destinations.append(Mesh_V1_PolicySelector())
        #expect(field { _ = try PolicyValidation.rule(r) } == "destinations[1]")
        r = ok
        r.sources.append(Mesh_V1_PolicySelector.with { $0.role = .unspecified })
        #expect(field { _ = try PolicyValidation.rule(r) } == "sources[1]")
        r = ok
        r.ports.append(Mesh_V1_PolicyPort.with { $0.protocol = .icmp; $0.first = 8; $0.last = 8 })
        #expect(field { _ = try PolicyValidation.rule(r) } == "ports[1]")
        r = ok
        r.ports.append(Mesh_V1_PolicyPort.with { $0.protocol = .tcp; $0.first = 10; $0.last = 9 })
        #expect(field { _ = try PolicyValidation.rule(r) } == "ports[1]")
        r = ok
        r.ports = Array(repeating: r.ports[0], count: 17)
        #expect(field { _ = try PolicyValidation.rule(r) } == "ports")
        r = ok
        r.id = "not-a-uuid"
        #expect(field { _ = try PolicyValidation.rule(r) } == "id")
        // Duplicates collapse; ids and tags are lowercased.
        r = ok
        r.sources += r.sources
        r.sources.append(Mesh_V1_PolicySelector.with { $0.tag = "WEB" })
        r.ports += r.ports
        let checked = try PolicyValidation.rule(r)
        #expect(checked.sources.map(PolicyText.text) == ["role:owner", "tag:web"])
        #expect(checked.ports.count == 1)
    }

    @Test func rulesMayNameOnlyTheTenantsOwnObjects() throws {
        let mine = UUID().uuidString.lowercased(), theirs = UUID().uuidString.lowercased()
        let rules = [
            try rule("a", from: ["user:\(mine)"], to: ["node:\(mine)"]),
            try rule("b", from: ["device:\(mine)"], to: ["device:\(theirs)"]),
        ]
        let refs = PolicyValidation.references(rules) { "rules[\($0)]." }
        #expect(refs.users == [mine: "rules[0].sources[0]"])
        #expect(refs.devices == [mine: "rules[1].sources[0]", theirs: "rules[1].destinations[0]"])
        #expect(throws: Never.self) {
            try PolicyValidation.checkReferences(refs, users: [mine], devices: [mine, theirs], nodes: [mine])
        }
        #expect(field { try PolicyValidation.checkReferences(refs, users: [mine], devices: [mine], nodes: [mine]) } == "rules[1].destinations[0]")
        #expect(field { try PolicyValidation.checkReferences(refs, users: [], devices: [mine, theirs], nodes: [mine]) } == "rules[0].sources[0]")
    }

    @Test("each plan's rule cap", arguments: [(Mesh_V1_Plan.free, 10), (.pro, 50), (.team, 500), (.enterprise, 1000)])
    func ruleCaps(plan: Mesh_V1_Plan, cap: Int) throws {
        let p = try #require(plan.policy)
        #expect(p.policyRuleCap == cap)
        let one = try rule("r", from: ["*"], to: ["tag:web"], ports: ["tcp:22"])
        #expect(throws: Never.self) { try PolicyValidation.checkSize(Array(repeating: one, count: cap), plan: p) }
        #expect(throws: MeshError.ruleCapReached(plan: plan, cap: cap)) { try PolicyValidation.checkSize(Array(repeating: one, count: cap + 1), plan: p) }
    }

    @Test func aRuleSetMustFitOneChange() throws {
        let p = try #require(Mesh_V1_Plan.enterprise.policy)
        var big = try rule(String(repeating: "x", count: 100), from: [], to: [])
        big.sources = (0..<16).map { _ in Mesh_V1_PolicySelector.with { $0.deviceID = UUID().uuidString.lowercased() } }
        big.destinations = big.sources
        #expect(field { try PolicyValidation.checkSize(Array(repeating: big, count: 1000), plan: p) } == "rules")
    }

    @Test func theRuleCapTravelsAsItself() {
        let e = MeshError.ruleCapReached(plan: .pro, cap: 50)
        #expect(MeshError(proto: e.proto) == e)
        #expect(MeshError(proto: MeshError.quotaExceeded(plan: .pro, cap: 20).proto) == .quotaExceeded(plan: .pro, cap: 20))
        #expect(e.busCode == 403 && e.code == .quotaExceeded)
        #expect(e.message == "rule cap reached: the Pro plan allows 50 access rules")
    }

    @Test func tagsAreCheckedAndSorted() throws {
        #expect(try PolicyValidation.tags(["Web", "db"]) == ["db", "web"])
        #expect(field { _ = try PolicyValidation.tags(["web", "web"]) } == "tags[1]")
        #expect(field { _ = try PolicyValidation.tags(["ok", "not ok"]) } == "tags[1]")
        #expect(field { _ = try PolicyValidation.tags((0..<17).map { "t\($0)" }) } == "tags")
        #expect(try PolicyValidation.tags([]) == [])
    }

    @Test func rulesParseFromJSONWithFieldPaths() throws {
        let ok: [String: Any] = ["name": "n", "sources": ["*"], "destinations": ["tag:web"], "ports": ["tcp:22"]]
        #expect(PolicyText.text(try PolicyText.rule(json: ok, path: "rules[0].", allowID: false).ports[0]) == "tcp:22")
        var bad = ok
        bad["extra"] = 1
        #expect(field { _ = try PolicyText.rule(json: bad, path: "rules[4].", allowID: false) } == "rules[4].extra")
        bad = ok
        bad["sources"] = ["*", 7]
        #expect(field { _ = try PolicyText.rule(json: bad, path: "rules[4].", allowID: false) } == "rules[4].sources[1]")
        bad = ok
        bad["destinations"] = nil
        #expect(field { _ = try PolicyText.rule(json: bad, path: "", allowID: false) } == "destinations")
        bad = ok
        bad["ports"] = ["tcp:22", "tcp:99999"]
        #expect(field { _ = try PolicyText.rule(json: bad, path: "", allowID: false) } == "ports[1]")
        bad = ok
        bad["id"] = "x"
        #expect(field { _ = try PolicyText.rule(json: bad, path: "", allowID: false) } == "id")
        #expect(try PolicyText.rule(json: bad, path: "", allowID: true).id == "x")
    }

    // MARK: Properties

    /// The node's compiled sets find a member's selectors from what it carries; that must be exactly
    /// the selectors that match it.
    @Test(arguments: [UInt64(3), 17, 99])
    func candidatesAreExactlyTheMatchingSelectors(seed: UInt64) {
        var rng = SeededRNG(seed)
        let w = PolicyWorld.random(&rng)
        for _ in 0..<2000 {
            let s = w.selector(&rng)
            for m in w.members.values {
                #expect(AccessPolicy.matches(s, m) == AccessPolicy.candidates(m).contains(s), "seed \(seed): \(PolicyText.text(s)) on \(m.id)")
            }
        }
    }

    /// The index the mesh DNS asks agrees with the rules, also after member changes one by one.
    @Test(arguments: [UInt64(5), 23, 404])
    func reachabilityIndexAgreesWithTheRules(seed: UInt64) {
        var rng = SeededRNG(seed)
        var w = PolicyWorld.random(&rng, devices: 30)
        let policy = AccessPolicy(w.policy(&rng, rules: 40))
        var index = ReachabilityIndex(policy: policy, members: w.members.values, settings: w.settings)
        func check(_ when: String) {
            for a in w.members.values {
                for b in w.members.values {
                    let expected = PeerCatalog.isNamed(a, settings: w.settings) && PeerCatalog.isNamed(b, settings: w.settings)
                        && policy.mayReach(from: a, to: b)
                    #expect(index.mayReach(from: a.id, to: b.id) == expected, "seed \(seed) \(when)")
                }
            }
        }
        check("built")
        for step in 0..<30 {
            let ids = w.members.keys.sorted()
            let id = ids[Int(rng.next() % UInt64(ids.count))]
            let before = w.members[id]!
            var after = before
            switch rng.next() % 4 {
            case 0: after.tags = PolicyWorld.tags.filter { _ in rng.next() % 2 == 0 }
            case 1: after.active.toggle()
            case 2 where after.kind == .device: after.deviceType = [.iphone, .laptop][Int(rng.next() % 2)]
            default:
                w.members[id] = nil
                index.update(before: before, after: nil, settings: w.settings)
                check("step \(step): removed")
                continue
            }
            w.members[id] = after
            index.update(before: before, after: after, settings: w.settings)
            check("step \(step)")
        }
    }

    @Test func noRuleMeansEverythingIsReachable() {
        var rng = SeededRNG(8)
        let w = PolicyWorld.random(&rng)
        let index = ReachabilityIndex(policy: AccessPolicy(Mesh_V1_PolicySet()), members: w.members.values, settings: w.settings)
        #expect(index.open && index.mayReach(from: "anything", to: "else"))
    }

    @Test func aPolicyChangeLeavesEveryPeerAlone() {
        var t = Tenant()
        let viewer = t.node("viewer")
        t.device("phone")
        let state = MeshState(viewer: viewer.id, revision: 1, settings: t.settings, members: t.members.values)
        var u = Mesh_V1_PeersUpdated()
        u.revision = 2
        u.policy = Mesh_V1_PolicySet.with { $0.version = 4; $0.rules = [Mesh_V1_PolicyRule.with { $0.id = "r"; $0.name = "r" }] }
        let step = state.prepare(u)
        #expect(step.touched?.isEmpty == true)
        var next = state
        next.commit(step)
        #expect(next.policy.version == 4 && next.revision == 2)
        #expect(next.peers() == state.peers())
        // Settings changes keep the policy.
        var s = Mesh_V1_PeersUpdated()
        s.revision = 3
        s.settings = t.settings
        next.commit(next.prepare(s))
        #expect(next.policy.version == 4)
    }
}
