import Foundation
import Logging
import MeshDomain
import MeshNet
import MeshProto

/// What a policy edit decides from, read with the tenant locked.
public struct PolicyEditState: Sendable {
    public var tenant: TenantRecord
    /// The rules now, in order.
    public var rules: [Mesh_V1_PolicyRule]
    /// Which of the ids the edit names belong to the tenant.
    public var users: Set<String>
    public var devices: Set<String>
    public var nodes: Set<String>

    public init(tenant: TenantRecord, rules: [Mesh_V1_PolicyRule], users: Set<String>, devices: Set<String>, nodes: Set<String>) {
        self.tenant = tenant
        self.rules = rules
        self.users = users
        self.devices = devices
        self.nodes = nodes
    }
}

/// What a policy edit writes: new rules (nil: unchanged) or a new DNS filter setting (nil: unchanged).
public struct PolicyEdit: Sendable {
    public var rules: [Mesh_V1_PolicyRule]?
    public var dnsFiltered: Bool?
    public var audit: AuditEvent

    public init(rules: [Mesh_V1_PolicyRule]? = nil, dnsFiltered: Bool? = nil, audit: AuditEvent) {
        self.rules = rules
        self.dnsFiltered = dnsFiltered
        self.audit = audit
    }
}

/// A member of a tenant named in a dry run.
public enum MemberReference: Sendable, Equatable {
    case device(UUID)
    case node(UUID)
    /// A mesh address (IPv4 or IPv6).
    case address(String)
    /// A DNS label (the first label of `<slug>.<domain>`).
    case slug(String)
}

/// Access policies and tags (PolicyService).
public protocol PolicyRepository: Sendable {
    /// The tenant and its rules in order; nil for an unknown tenant.
    func policy(tenant: UUID) async throws(MeshError) -> (TenantRecord, [Mesh_V1_PolicyRule])?
    /// With the tenant locked: reads the rules and which of `references` the tenant has, lets
    /// `decide` make the edit (nil: nothing changes), writes the rules (bumping the policy version)
    /// or the DNS filter, appends the change for the nodes (the whole policy, or the settings) and
    /// the audit entry. Returns the tenant and rules after, and the revision written.
    func editPolicy(tenant: UUID, references: PolicyValidation.References,
                    _ decide: @escaping @Sendable (PolicyEditState) throws(MeshError) -> PolicyEdit?)
        async throws(MeshError) -> (tenant: TenantRecord, rules: [Mesh_V1_PolicyRule], revision: UInt64?)
    /// With the tenant locked: gives a device or node of the tenant `tags` (sorted, checked) and
    /// publishes its new state. `notFound` when the tenant has no such member. Returns the revision
    /// (nil when the tags did not change).
    func setTags(tenant: UUID, kind: Mesh_V1_PeerKind, id: UUID, tags: [String], actor: String, requestID: String)
        async throws(MeshError) -> UInt64?
    /// The member a reference names, with the tenant; nil when the tenant has no such member.
    func member(tenant: UUID, _ ref: MemberReference) async throws(MeshError) -> (TenantRecord, Mesh_V1_Member)?
}

/// Access policies: the rules, the DNS filter, tags and dry runs (docs/policies.md). Admins only;
/// every write is validated (a 400 names the field), atomic with its change for the nodes, and
/// audited.
public struct PolicyService: Sendable {
    let policies: any PolicyRepository
    let users: UserService
    let notifier: any ChangeNotifier
    let logger: Logger

    public init(policies: any PolicyRepository, users: UserService, notifier: any ChangeNotifier, logger: Logger) {
        self.policies = policies
        self.users = users
        self.notifier = notifier
        self.logger = logger
    }

    func admin(_ caller: Mesh_V1_Caller) async throws(MeshError) -> CallerIdentity {
        let who = try await users.identify(caller)
        guard who.isAdmin else { throw .permissionDenied("access policies are for admins") }
        return who
    }

    /// The tenant's policy.
    public func get(_ req: Mesh_V1_GetPolicyRequest) async throws(MeshError) -> Mesh_V1_Policy {
        let who = try await admin(req.caller)
        guard let (t, rules) = try await policies.policy(tenant: who.tenant) else { throw .notFound("unknown tenant") }
        return Self.proto(t, rules)
    }

    static func proto(_ t: TenantRecord, _ rules: [Mesh_V1_PolicyRule]) -> Mesh_V1_Policy {
        var p = Mesh_V1_Policy()
        p.tenantID = t.id.lowercased
        p.version = t.policyVersion
        p.rules = rules
        p.dnsFiltered = t.dnsFiltered
        let cap = t.plan.policy?.policyRuleCap
        p.rulesUnlimited = cap == nil
        p.ruleCap = UInt32(cap ?? 0)
        return p
    }

    /// One edit: replace every rule, add, update or delete one, or turn the DNS filter on or off.
    public func update(_ req: Mesh_V1_UpdatePolicyRequest) async throws(MeshError) -> Mesh_V1_UpdatePolicyResponse {
        let who = try await admin(req.caller)
        let actor = who.actor, requestID = req.caller.requestID, tenant = who.tenant
        @Sendable func event(_ action: String, _ target: String, _ detail: String) -> AuditEvent {
            AuditEvent(tenant: tenant, actor: actor, action: action, target: target, requestID: requestID, detail: detail)
        }
        let refs: PolicyValidation.References
        let decide: @Sendable (PolicyEditState) throws(MeshError) -> PolicyEdit?
        var touched: Mesh_V1_PolicyRule?
        switch req.edit {
        case .replace(let all):
            var rules: [Mesh_V1_PolicyRule] = []
            var ids = Set<String>()
            for (i, r) in all.rules.enumerated() {
                var c = try PolicyValidation.rule(r, path: "rules[\(i)].")
                if c.id.isEmpty { c.id = UUID().lowercasedText }
                guard ids.insert(c.id).inserted else { throw .invalidArgument(field: "rules[\(i)].id", message: "rules[\(i)].id: listed twice") }
                rules.append(c)
            }
            refs = PolicyValidation.references(rules) { "rules[\($0)]." }
            let new = rules
            decide = { (s: PolicyEditState) throws(MeshError) -> PolicyEdit? in
                try PolicyValidation.checkReferences(refs, users: s.users, devices: s.devices, nodes: s.nodes)
                try Self.checkSize(new, s.tenant)
                guard new != s.rules else { return nil }
                return PolicyEdit(rules: new, audit: event("policy.replace", "", "\(new.count) rules (were \(s.rules.count))"))
            }
        case .add(let r):
            var rule = try PolicyValidation.rule(r)
            rule.id = UUID().lowercasedText
            touched = rule
            refs = PolicyValidation.references([rule]) { _ in "" }
            let new = rule
            decide = { (s: PolicyEditState) throws(MeshError) -> PolicyEdit? in
                try PolicyValidation.checkReferences(refs, users: s.users, devices: s.devices, nodes: s.nodes)
                try Self.checkSize(s.rules + [new], s.tenant)
                return PolicyEdit(rules: s.rules + [new], audit: event("policy.rule.add", new.id, Self.describe(new)))
            }
        case .update(let r):
            guard !r.id.isEmpty else { throw .invalidArgument(field: "id", message: "id: the rule to update must be named") }
            let rule = try PolicyValidation.rule(r)
            touched = rule
            refs = PolicyValidation.references([rule]) { _ in "" }
            decide = { (s: PolicyEditState) throws(MeshError) -> PolicyEdit? in
                guard let i = s.rules.firstIndex(where: { $0.id == rule.id }) else { throw .notFound("no such rule") }
                try PolicyValidation.checkReferences(refs, users: s.users, devices: s.devices, nodes: s.nodes)
                guard s.rules[i] != rule else { return nil }
                var rules = s.rules
                rules[i] = rule
                try Self.checkSize(rules, s.tenant)
                return PolicyEdit(rules: rules, audit: event("policy.rule.update", rule.id, Self.describe(rule)))
            }
        case .deleteRuleID(let raw):
            guard let id = UUID(text: raw) else { throw .notFound("no such rule") }
            refs = PolicyValidation.References()
            decide = { (s: PolicyEditState) throws(MeshError) -> PolicyEdit? in
                guard let old = s.rules.first(where: { $0.id == id.lowercasedText }) else { throw .notFound("no such rule") }
                return PolicyEdit(rules: s.rules.filter { $0.id != old.id }, audit: event("policy.rule.delete", old.id, Self.describe(old)))
            }
        case .dnsFiltered(let on):
            refs = PolicyValidation.References()
            decide = { (s: PolicyEditState) throws(MeshError) -> PolicyEdit? in
                guard s.tenant.dnsFiltered != on else { return nil }
                return PolicyEdit(dnsFiltered: on, audit: event("policy.dns_filter", "", on ? "the mesh DNS answers only names a device may reach" : "the mesh DNS answers every name"))
            }
        case nil:
            throw .invalidArgument(field: "edit", message: "an edit must replace, add, update or delete rules, or set dns_filtered")
        }
        let (t, rules, revision) = try await policies.editPolicy(tenant: tenant, references: refs, decide)
        if revision != nil {
            notifier.changed(tenant: tenant)
            logger.info("access policy changed", metadata: ["tenant.id": "\(tenant.lowercased)", "policy.version": "\(t.policyVersion)",
                                                           "policy.rules": "\(rules.count)", "request.id": "\(requestID)"])
        }
        var resp = Mesh_V1_UpdatePolicyResponse()
        resp.policy = Self.proto(t, rules)
        resp.revision = revision ?? 0
        if let touched, let stored = rules.first(where: { $0.id == touched.id }) { resp.rule = stored }
        return resp
    }

    static func checkSize(_ rules: [Mesh_V1_PolicyRule], _ t: TenantRecord) throws(MeshError) {
        guard let plan = t.plan.policy else { throw .internal("tenant has an unknown plan") }
        try PolicyValidation.checkSize(rules, plan: plan)
    }

    /// A rule in one line, for the audit log.
    static func describe(_ r: Mesh_V1_PolicyRule) -> String {
        let ports = r.ports.isEmpty ? "all traffic" : r.ports.map(PolicyText.text).joined(separator: ", ")
        return "\"\(r.name)\": \(r.sources.map(PolicyText.text).joined(separator: ", ")) → \(r.destinations.map(PolicyText.text).joined(separator: ", ")) on \(ports)"
    }

    /// Gives a device or node its tags.
    public func setTags(_ req: Mesh_V1_SetTagsRequest) async throws(MeshError) -> Mesh_V1_SetTagsResponse {
        let who = try await admin(req.caller)
        guard req.kind == .device || req.kind == .node else { throw .invalidArgument(field: "kind", message: "kind must be device or node") }
        guard let id = UUID(text: req.memberID) else { throw .notFound("no such \(req.kind.key)") }
        let tags = try PolicyValidation.tags(req.tags)
        let revision = try await policies.setTags(tenant: who.tenant, kind: req.kind, id: id, tags: tags, actor: who.actor,
                                                  requestID: req.caller.requestID)
        if revision != nil { notifier.changed(tenant: who.tenant) }
        var resp = Mesh_V1_SetTagsResponse()
        resp.tags = tags
        resp.revision = revision ?? 0
        return resp
    }

    /// A dry run under the current rules.
    public func check(_ req: Mesh_V1_CheckPolicyRequest) async throws(MeshError) -> Mesh_V1_CheckPolicyResponse {
        let who = try await admin(req.caller)
        let traffic: AccessPolicy.Traffic
        switch req.protocol {
        case .tcp, .udp:
            guard (1...65535).contains(req.port) else { throw .invalidArgument(field: "port", message: "port must be 1 to 65535 for tcp and udp") }
            traffic = AccessPolicy.Traffic(req.protocol, port: req.port)
        case .icmp:
            guard req.port == 0 else { throw .invalidArgument(field: "port", message: "icmp has no ports") }
            traffic = AccessPolicy.Traffic(.icmp)
        default:
            throw .invalidArgument(field: "protocol", message: "protocol must be tcp, udp or icmp")
        }
        let fromRef = try Self.reference(req.from, field: "from"), toRef = try Self.reference(req.to, field: "to")
        guard let (_, from) = try await policies.member(tenant: who.tenant, fromRef) else {
            throw .invalidArgument(field: "from", message: "from: this tenant has no such device or node")
        }
        guard let (_, to) = try await policies.member(tenant: who.tenant, toRef) else {
            throw .invalidArgument(field: "to", message: "to: this tenant has no such device or node")
        }
        guard let (t, rules) = try await policies.policy(tenant: who.tenant) else { throw .notFound("unknown tenant") }
        var set = Mesh_V1_PolicySet()
        set.rules = rules
        set.version = t.policyVersion
        let verdict = AccessPolicy(set).verdict(from: from, to: to, traffic: traffic, settings: t.settings)
        var resp = Mesh_V1_CheckPolicyResponse()
        resp.allowed = verdict.allowed
        resp.reason = verdict.reason
        if case .rule(let r) = verdict {
            resp.ruleID = r.id
            resp.ruleName = r.name
        }
        resp.fromMember = "\(from.kind.key):\(from.id)"
        resp.toMember = "\(to.kind.key):\(to.id)"
        return resp
    }

    /// Parses `device:<id>`, `node:<id>`, a mesh address or a DNS name.
    static func reference(_ raw: String, field: String) throws(MeshError) -> MemberReference {
        let s = raw.trimmingCharacters(in: .whitespaces).lowercased()
        guard !s.isEmpty else { throw .invalidArgument(field: field, message: "\(field) must name a device or node") }
        for (prefix, make) in [("device:", MemberReference.device), ("node:", MemberReference.node)] where s.hasPrefix(prefix) {
            guard let id = UUID(text: String(s.dropFirst(prefix.count))) else {
                throw .invalidArgument(field: field, message: "\(field): \(prefix)<id> needs a UUID")
            }
            return make(id)
        }
        if let a = IPAddress(s) { return .address(a.description) }
        let label = s.split(separator: ".", maxSplits: 1).first.map(String.init) ?? s
        guard !label.isEmpty, label.unicodeScalars.allSatisfy({ ($0 >= "a" && $0 <= "z") || ($0 >= "0" && $0 <= "9") || $0 == "-" }) else {
            throw .invalidArgument(field: field, message: "\(field) must be device:<id>, node:<id>, a mesh address or a DNS name")
        }
        return .slug(label)
    }
}
