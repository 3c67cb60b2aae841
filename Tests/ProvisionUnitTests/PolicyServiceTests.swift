import Foundation
import Logging
import MeshDomain
import MeshProto
import ProvisionCore
import Testing

/// Access policies through ProvisionSvc's PolicyService on the in-memory store: admins only, every
/// edit validated with the field named, ids of other tenants refused, the plan's cap, one change for
/// the nodes per edit, audit entries, tags and dry runs.
@Suite("Access policies through the service, in memory", .timeLimit(.minutes(1)))
struct PolicyServiceTests {
    let h = Harness(rate: RateLimit(limit: 0, window: .seconds(60)))
    let policies: PolicyService

    init() {
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        policies = PolicyService(policies: h.store, users: h.users, notifier: h.changes, logger: logger)
    }

    func rule(_ name: String, from: [String], to: [String], ports: [String] = []) -> Mesh_V1_PolicyRule {
        Mesh_V1_PolicyRule.with {
            $0.name = name
            $0.sources = from.map { try! PolicyText.selector($0, field: "") }
            $0.destinations = to.map { try! PolicyText.selector($0, field: "") }
            $0.ports = ports.map { try! PolicyText.port($0, field: "") }
        }
    }

    func edit(_ caller: Mesh_V1_Caller, _ e: Mesh_V1_UpdatePolicyRequest.OneOf_Edit) async throws(MeshError) -> Mesh_V1_UpdatePolicyResponse {
        try await policies.update(Mesh_V1_UpdatePolicyRequest.with { $0.caller = caller; $0.edit = e })
    }

    func error(_ body: () async throws -> Void) async -> MeshError? {
        do {
            try await body()
            return nil
        } catch let e as MeshError {
            return e
        } catch {
            return .internal("\(error)")
        }
    }

    func check(_ caller: Mesh_V1_Caller, _ from: String, _ to: String, _ proto: Mesh_V1_PolicyProtocol, _ port: UInt32) async throws -> Mesh_V1_CheckPolicyResponse {
        try await policies.check(Mesh_V1_CheckPolicyRequest.with { $0.caller = caller; $0.from = from; $0.to = to; $0.protocol = proto; $0.port = port })
    }

    @Test func adminsEditRulesAndEveryEditIsOneChangeForTheNodes() async throws {
        let (t, admin) = try await h.tenant(.team)
        let tenant = UUID(uuidString: t.id)!
        let before = await h.store.outbox[tenant]?.count ?? 0

        let added = try await edit(admin, .add(rule("ssh", from: ["role:admin"], to: ["tag:servers"], ports: ["tcp:22"])))
        #expect(!added.rule.id.isEmpty && added.policy.version == 1 && added.policy.rules.count == 1 && added.revision > 0)
        let change = try #require(await h.store.outbox[tenant]?.last)
        #expect(change.newPolicy?.version == 1 && change.newPolicy?.rules == added.policy.rules)
        #expect(change.revision == added.revision)

        var changed = added.rule
        changed.ports = [try PolicyText.port("tcp:2222", field: "")]
        let updated = try await edit(admin, .update(changed))
        #expect(updated.policy.version == 2 && updated.policy.rules == [changed])
        // The same rule again changes nothing and publishes nothing.
        let count = await h.store.outbox[tenant]?.count
        #expect(try await edit(admin, .update(changed)).revision == 0)
        #expect(await h.store.outbox[tenant]?.count == count)

        let second = try await edit(admin, .add(rule("web", from: ["*"], to: ["tag:web"], ports: ["tcp:443"])))
        #expect(second.policy.rules.map(\.name) == ["ssh", "web"])
        let removed = try await edit(admin, .deleteRuleID(added.rule.id))
        #expect(removed.policy.rules.map(\.name) == ["web"] && removed.policy.version == 4)
        #expect(await error { _ = try await edit(admin, .deleteRuleID(added.rule.id)) } == .notFound("no such rule"))

        // Replace everything: ids kept where given, made where not.
        var keep = second.rule
        keep.name = "web (kept)"
        let replaced = try await edit(admin, .replace(Mesh_V1_PolicyRules.with { $0.rules = [keep, rule("new", from: ["type:laptop"], to: ["*"])] }))
        #expect(replaced.policy.rules[0].id == second.rule.id && !replaced.policy.rules[1].id.isEmpty)
        #expect(replaced.policy.rules.map(\.name) == ["web (kept)", "new"])

        // Every edit is in the outbox, and audited.
        #expect((await h.store.outbox[tenant]?.count ?? 0) - before == 5)
        let log = try await h.audit.list(Mesh_V1_ListAuditRequest.with { $0.caller = admin; $0.limit = 20 })
        let actions = log.entries.map(\.action)
        for a in ["policy.rule.add", "policy.rule.update", "policy.rule.delete", "policy.replace"] {
            #expect(actions.contains(a), "\(a) not audited: \(actions)")
        }
        #expect(log.entries.contains { $0.action == "policy.rule.add" && $0.detail == "\"ssh\": role:admin → tag:servers on tcp:22" && $0.targetID == added.rule.id })
        let got = try await policies.get(Mesh_V1_GetPolicyRequest.with { $0.caller = admin })
        #expect(got.rules == replaced.policy.rules && got.version == 5 && got.ruleCap == 500 && !got.rulesUnlimited)
    }

    @Test func ownersMayNotTouchPolicies() async throws {
        let (t, _) = try await h.tenant(.team)
        let owner = try await h.user(t, .owner)
        #expect(await error { _ = try await edit(owner, .add(rule("x", from: ["*"], to: ["*"]))) }?.code == .permissionDenied)
        #expect(await error { _ = try await policies.get(Mesh_V1_GetPolicyRequest.with { $0.caller = owner }) }?.code == .permissionDenied)
        #expect(await error { _ = try await check(owner, "node:\(UUID())", "node:\(UUID())", .tcp, 22) }?.code == .permissionDenied)
    }

    @Test func malformedRulesAreRefusedNamingTheField() async throws {
        let (_, admin) = try await h.tenant(.team)
        var r = rule("bad", from: ["*"], to: ["tag:web"], ports: ["tcp:22"])
        r.ports[0].first = 70000
        #expect(await error { _ = try await edit(admin, .add(r)) } == .invalidArgument(field: "ports[0]", message: "ports[0]: ports are 1 to 65535"))
        r = rule("", from: ["*"], to: ["*"])
        #expect(await error { _ = try await edit(admin, .add(r)) }.map { if case .invalidArgument(let f, _) = $0 { f } else { "" } } == "name")
        let good = rule("ok", from: ["*"], to: ["*"])
        var bad = good
        bad.destinations = []
        let e = await error { _ = try await edit(admin, .replace(Mesh_V1_PolicyRules.with { $0.rules = [good, good, bad] })) }
        #expect(e.map { if case .invalidArgument(let f, _) = $0 { f } else { "" } } == "rules[2].destinations")
        var dup = good
        dup.id = UUID().uuidString.lowercased()
        let e2 = await error { _ = try await edit(admin, .replace(Mesh_V1_PolicyRules.with { $0.rules = [dup, dup] })) }
        #expect(e2.map { if case .invalidArgument(let f, _) = $0 { f } else { "" } } == "rules[1].id")
        #expect(await error { _ = try await policies.update(Mesh_V1_UpdatePolicyRequest.with { $0.caller = admin }) }?.code == .invalidArgument)
        // Nothing was stored.
        #expect(try await policies.get(Mesh_V1_GetPolicyRequest.with { $0.caller = admin }).rules.isEmpty)
    }

    @Test func rulesNamingAnotherTenantsObjectsAreRefused() async throws {
        let (mine, admin) = try await h.tenant(.team)
        let (theirs, theirAdmin) = try await h.tenant(.team)
        let theirDevice = try await h.create(theirAdmin, "their laptop").device
        let theirNode = try await h.node(theirs, admin: theirAdmin, name: "their node")
        let myDevice = try await h.create(admin, "my laptop").device
        _ = mine
        for (sel, what) in [("device:\(theirDevice.id)", "device"), ("node:\(theirNode.id)", "node"), ("user:\(theirAdmin.userID)", "user"),
                            ("device:\(UUID().uuidString.lowercased())", "device")] {
            let e = await error { _ = try await edit(admin, .add(rule("x", from: ["device:\(myDevice.id)"], to: [sel]))) }
            guard case .invalidArgument(let field, let message) = e else { Issue.record("\(sel): \(String(describing: e))"); continue }
            #expect(field == "destinations[0]" && message.contains("this tenant has no \(what)"), "\(sel): \(message)")
        }
        // The same ids are fine in their own tenant.
        _ = try await edit(theirAdmin, .add(rule("x", from: ["user:\(theirAdmin.userID)"], to: ["device:\(theirDevice.id)", "node:\(theirNode.id)"])))
    }

    @Test("the plan's rule cap", arguments: [Mesh_V1_Plan.free, .pro])
    func ruleCap(plan: Mesh_V1_Plan) async throws {
        let (_, admin) = try await h.tenant(plan)
        let cap = plan.policy!.policyRuleCap!
        let many = Mesh_V1_PolicyRules.with { $0.rules = (0..<cap).map { rule("r\($0)", from: ["*"], to: ["tag:t\($0)"]) } }
        _ = try await edit(admin, .replace(many))
        #expect(await error { _ = try await edit(admin, .add(rule("one more", from: ["*"], to: ["*"]))) } == .ruleCapReached(plan: plan, cap: cap))
        var over = many
        over.rules.append(rule("over", from: ["*"], to: ["*"]))
        #expect(await error { _ = try await edit(admin, .replace(over)) } == .ruleCapReached(plan: plan, cap: cap))
    }

    @Test func tagsAndTheDNSFilterAreChangesForTheNodes() async throws {
        let (t, admin) = try await h.tenant(.enterprise)
        let tenant = UUID(uuidString: t.id)!
        let device = try await h.create(admin, "laptop", type: .laptop).device
        let node = try #require(try await h.nodes.list(Mesh_V1_ListNodesRequest.with { $0.caller = admin }).first)
        let r = try await policies.setTags(Mesh_V1_SetTagsRequest.with { $0.caller = admin; $0.kind = .device; $0.memberID = device.id; $0.tags = ["Web", "ops"] })
        #expect(r.tags == ["ops", "web"] && r.revision > 0)
        let upsert = try #require(await h.store.outbox[tenant]?.last?.upserted)
        #expect(upsert.id == device.id && upsert.tags == ["ops", "web"] && upsert.ownerRole == .admin && upsert.deviceType == .laptop)
        #expect(try await h.devices.list(Mesh_V1_ListDevicesRequest.with { $0.caller = admin }).devices.first?.tags == ["ops", "web"])
        // The same tags again: no change.
        #expect(try await policies.setTags(Mesh_V1_SetTagsRequest.with { $0.caller = admin; $0.kind = .device; $0.memberID = device.id; $0.tags = ["web", "ops"] }).revision == 0)
        _ = try await policies.setTags(Mesh_V1_SetTagsRequest.with { $0.caller = admin; $0.kind = .node; $0.memberID = node.id; $0.tags = ["servers"] })
        #expect(await h.store.outbox[tenant]?.last?.upserted?.tags == ["servers"])
        let bad = await error { _ = try await policies.setTags(Mesh_V1_SetTagsRequest.with { $0.caller = admin; $0.kind = .device; $0.memberID = device.id; $0.tags = ["no spaces"] }) }
        #expect(bad.map { if case .invalidArgument(let f, _) = $0 { f } else { "" } } == "tags[0]")
        let (_, other) = try await h.tenant(.enterprise)
        #expect(await error { _ = try await policies.setTags(Mesh_V1_SetTagsRequest.with { $0.caller = other; $0.kind = .device; $0.memberID = device.id; $0.tags = ["x"] }) } == .notFound("no such device"))

        let on = try await edit(admin, .dnsFiltered(true))
        #expect(on.policy.dnsFiltered && on.revision > 0)
        #expect(await h.store.outbox[tenant]?.last?.newSettings?.dnsFiltered == true)
        #expect(try await edit(admin, .dnsFiltered(true)).revision == 0)
    }

    @Test func dryRunsNameTheRule() async throws {
        let (t, admin) = try await h.tenant(.enterprise)
        let owner = try await h.user(t, .owner)
        let laptop = try await h.create(admin, "A laptop", type: .laptop).device
        let phone = try await h.create(owner, "B phone", type: .android).device
        let node = try #require(try await h.nodes.list(Mesh_V1_ListNodesRequest.with { $0.caller = admin }).first)
        // No rule: everything.
        #expect(try await check(admin, "device:\(laptop.id)", "node:\(node.id)", .tcp, 443).allowed)
        let ssh = try await edit(admin, .add(rule("ssh", from: ["device:\(laptop.id)"], to: ["node:\(node.id)"], ports: ["tcp:22"]))).rule
        let c = try await check(admin, "device:\(laptop.id)", "node:\(node.id)", .tcp, 22)
        #expect(c.allowed && c.ruleID == ssh.id && c.ruleName == "ssh" && c.fromMember == "device:\(laptop.id)" && c.toMember == "node:\(node.id)")
        // By address and by DNS name too.
        #expect(try await check(admin, laptop.ipv6, node.dnsName, .tcp, 22).ruleID == ssh.id)
        #expect(try await check(admin, laptop.slug, node.ipv4, .tcp, 22).allowed)
        let refused = try await check(admin, "device:\(laptop.id)", "node:\(node.id)", .tcp, 23)
        #expect(!refused.allowed && refused.ruleID.isEmpty && refused.reason.contains("refused by default"))
        #expect(!(try await check(admin, "node:\(node.id)", "device:\(laptop.id)", .tcp, 22)).allowed, "rules are directional")
        #expect(!(try await check(admin, "device:\(phone.id)", "device:\(laptop.id)", .icmp, 0)).allowed)
        #expect(try await check(admin, "device:\(phone.id)", "node:\(node.id)", .udp, 53).allowed, "the mesh DNS stays open")
        // Bad input names the field.
        for (from, to, proto, port, field) in [("nonsense!", "device:\(laptop.id)", Mesh_V1_PolicyProtocol.tcp, UInt32(22), "from"),
                                                ("device:\(laptop.id)", "device:\(UUID())", .tcp, 22, "to"),
                                                ("device:\(laptop.id)", "node:\(node.id)", .tcp, 0, "port"),
                                                ("device:\(laptop.id)", "node:\(node.id)", .icmp, 8, "port"),
                                                ("device:\(laptop.id)", "node:\(node.id)", .unspecified, 22, "protocol")] {
            let e = await error { _ = try await check(admin, from, to, proto, port) }
            #expect(e.map { if case .invalidArgument(let f, _) = $0 { f } else { "\($0)" } } == field, "\(from) \(to) \(proto) \(port)")
        }
    }
}
