import Foundation
import MeshDomain
import MeshProto
import Testing

@Suite("Provisioning rules", .timeLimit(.minutes(1)))
struct RulesTests {
    let now = Date(timeIntervalSince1970: 1_800_000_000)

    func state(plan: Mesh_V1_Plan = .pro, used: Int = 0, recent: Int = 0, oldest: Date? = nil, names: Set<String> = [],
               nodes: Int = 1, meshOn: Bool = true) -> DeviceCreationState {
        var t = Tenant()
        for i in 0..<nodes { t.node("n\(i)") }
        t.settings.meshEnabled = meshOn
        return DeviceCreationState(plan: plan, settings: t.settings, devicesUsed: used, recentCreations: recent, oldestRecentCreation: oldest,
                                   takenNames: names, nodesByAge: t.nodesByAge, configMaxNodes: 8, now: now)
    }

    @Test("rate-limit window edges", arguments: [
        // (creations in the window, oldest of them seconds ago, refused?, retry-after)
        (4, 59.0, false, 0), (5, 59.0, true, 1), (5, 0.0, true, 60), (5, 30.5, true, 30), (6, 10.0, true, 50), (0, 0.0, false, 0),
    ])
    func rateLimit(recent: Int, ago: Double, refused: Bool, retry: Int) {
        let limit = RateLimit.seed
        do {
            try limit.check(recent: recent, oldest: now.addingTimeInterval(-ago), now: now)
            #expect(!refused)
        } catch {
            #expect(refused)
            #expect(error == .rateLimited(retryAfterSeconds: retry))
        }
    }

    @Test func aDisabledLimitNeverRefuses() throws {
        try RateLimit(limit: 0, window: .seconds(60)).check(recent: 1000, oldest: now, now: now)
    }

    @Test("caps at the boundary, for every plan", arguments: PlanPolicy.catalogue)
    func capsInCreation(policy: PlanPolicy) throws {
        let base = Slug.make("phone")
        if let cap = policy.deviceCap {
            _ = try DeviceRules.decideCreation(state(plan: policy.plan, used: cap - 1), slugBase: base, rateLimit: nil)
            #expect(throws: MeshError.quotaExceeded(plan: policy.plan, cap: cap)) {
                _ = try DeviceRules.decideCreation(state(plan: policy.plan, used: cap), slugBase: base, rateLimit: nil)
            }
        } else {
            _ = try DeviceRules.decideCreation(state(plan: policy.plan, used: 60_000), slugBase: base, rateLimit: nil)
        }
    }

    @Test func theRulesRefuseInOrderAndPickTheConfig() throws {
        let limit = RateLimit.seed
        #expect(throws: MeshError.self) { _ = try DeviceRules.decideCreation(state(meshOn: false), slugBase: "a", rateLimit: limit) }
        do {
            _ = try DeviceRules.decideCreation(state(nodes: 0), slugBase: "a", rateLimit: limit)
            Issue.record("a tenant without nodes took a device")
        } catch {
            #expect(error.code == .failedPrecondition && error.message.contains("enroll a node first"))
        }
        #expect(throws: MeshError.rateLimited(retryAfterSeconds: 60)) {
            _ = try DeviceRules.decideCreation(state(recent: 5, oldest: now), slugBase: "a", rateLimit: limit)
        }
        // Exempt callers are not counted.
        _ = try DeviceRules.decideCreation(state(recent: 50, oldest: now), slugBase: "a", rateLimit: nil)
        let d = try DeviceRules.decideCreation(state(names: ["phone", "phone-2"], nodes: 3), slugBase: "phone", rateLimit: limit)
        #expect(d.slug == "phone-3")
        #expect(d.config.count == 3 && d.config[0].isHub && d.hubID == d.config[0].node.id)
        // A re-issue keeps its slug and does not count against the cap.
        let r = try DeviceRules.decideReissue(state(plan: .free, used: 3), slug: "mine", rateLimit: limit)
        #expect(r.slug == "mine")
    }

    @Test func samlGate() throws {
        let ent = PlanPolicy.of(.enterprise)!, team = PlanPolicy.of(.team)!
        #expect(throws: MeshError.self) { try ent.checkProvisioningSession(tenantRequiresSAML: true, amr: ["pwd"]) }
        try ent.checkProvisioningSession(tenantRequiresSAML: true, amr: ["pwd", "SAML"])
        try ent.checkProvisioningSession(tenantRequiresSAML: false, amr: [])
        // A gate left over on a plan without it does not apply, and asking for it is refused.
        try team.checkProvisioningSession(tenantRequiresSAML: true, amr: [])
        #expect(throws: MeshError.self) { try team.checkSAMLGate(requested: true) }
        try team.checkSAMLGate(requested: false)
        #expect(!team.samlGate(after: true) && ent.samlGate(after: true))
    }

    @Test func diagnosticsTiers() throws {
        let free = PlanPolicy.of(.free)!, pro = PlanPolicy.of(.pro)!, team = PlanPolicy.of(.team)!
        #expect(free.includes(.basicState) && !free.includes(.perPeerStats))
        #expect(pro.includes(.perPeerStats) && !pro.includes(.auditLog))
        do {
            try pro.requireDiagnostics(.auditLog, for: "the audit log")
            Issue.record("Pro got the audit log")
        } catch {
            #expect(error.message == "the audit log needs the Team plan or above (this tenant is on Pro)")
        }
        try team.requireDiagnostics(.auditLog, for: "the audit log")
    }

    @Test func slugsAndNames() throws {
        #expect(Slug.make("  Zoë's iPhone ") == "zoes-iphone")
        #expect(Slug.make("🚀", fallback: "laptop") == "laptop")
        #expect(Slug.firstFree("a", taken: []) == "a")
        #expect(Slug.firstFree("a", taken: ["a", "a-2"]) == "a-3")
        #expect(Slug.firstFree(String(repeating: "x", count: 63), taken: [String(repeating: "x", count: 63)]).count == 63)
        // The range storage reads holds exactly the names that start with the collision prefix.
        let range = Slug.collisionRange("bench-17")
        #expect(range == ("bench-17", "bench-18"))
        func inRange(_ name: String) -> Bool {
            !name.utf8.lexicographicallyPrecedes(range.lower.utf8) && name.utf8.lexicographicallyPrecedes(range.upper.utf8)
        }
        for name in ["bench-17", "bench-17-2", "bench-170", "bench-1799"] { #expect(inRange(name), "\(name)") }
        for name in ["bench-16", "bench-18", "bench-1", "bench-2", "bench"] { #expect(!inRange(name), "\(name)") }
        #expect(Slug.collisionRange("a-").upper == "a.")
        #expect(Slug.collisionRange(String(repeating: "z", count: 50)) == (String(repeating: "z", count: 40), String(repeating: "z", count: 39) + "{"))
        #expect(Slug.collisionRange("\u{7F}") == ("\u{7F}", "\u{10FFFF}"))
        #expect(Slug.collisionRange("é") == ("é", "\u{10FFFF}"))
        #expect(Slug.collisionRange("aé") == ("aé", "b"))
        #expect(MeshName.dnsName(slug: "a", domain: "quazzar.mesh") == "a.quazzar.mesh")
        #expect(try MeshName.validateDomain(" Corp.Example ") == "corp.example")
        for bad in ["", "mesh", "-a.b", "a..b", "a_b.c", String(repeating: "a", count: 64) + ".b"] {
            #expect(throws: MeshError.self, "\(bad)") { _ = try MeshName.validateDomain(bad) }
        }
        #expect(throws: MeshError.self) { try WireGuardKeyText.validatePublicKey("short") }
        #expect(WireGuardKeyText.isKey(Data(repeating: 7, count: 32).base64EncodedString()))
    }
}
