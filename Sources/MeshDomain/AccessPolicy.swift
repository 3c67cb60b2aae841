import Foundation
import MeshProto

/// A tenant's access policy: rules that allow traffic from sources to destinations, each side a set
/// of selectors, optionally limited to protocols and ports (docs/policies.md).
///
/// - No rule: everything is allowed, as without policies.
/// - Once any rule exists, what no rule allows is refused. Rules only allow; their order decides
///   which one a dry run names, never the verdict.
/// - Directional: a rule lets its sources open flows to its destinations; the replies of an allowed
///   flow pass (connection tracking on the nodes), the other direction needs a rule of its own.
/// - The mesh DNS on every node (TCP and UDP port 53 to a node's addresses) stays open to every
///   member: every device config names nodes as its resolvers, and the resolver itself hides the
///   names a device may not reach when the tenant turns the DNS filter on.
///
/// Selectors match members by the facts every member carries (``Mesh_V1_Member``): its id and kind,
/// and for a device its owner, the owner's role, its type and tags; for a node its tags. Only
/// members that take part in the mesh are matched (``PeerCatalog/isNamed(_:settings:)``).
///
/// The same functions decide a dry run in ProvisionSvc, the names the mesh DNS serves, and which
/// tracked flows a node cuts after a change; the nodes' packet filter is compiled from the same
/// selectors (NodeApplierCore's `FilterCompiler`), and a test checks that the two agree.
public struct AccessPolicy: Sendable {
    /// The rules, in order.
    public let rules: [Mesh_V1_PolicyRule]
    public let version: UInt64

    /// The port every node's mesh DNS listens on; always open to every member.
    public static let dnsPort: UInt32 = 53

    public init(_ set: Mesh_V1_PolicySet) {
        rules = set.rules
        version = set.version
    }

    /// True when the tenant has no rule: nothing is filtered.
    public var isOpen: Bool { rules.isEmpty }

    // MARK: Matching

    /// Whether `selector` names member `m`.
    public static func matches(_ selector: Mesh_V1_PolicySelector, _ m: Mesh_V1_Member) -> Bool {
        switch selector.target {
        case .all: return true
        case .userID(let u): return m.kind == .device && m.ownerUserID == u
        case .role(let r): return m.kind == .device && m.ownerRole == r
        case .deviceType(let t): return m.kind == .device && m.deviceType == t
        case .tag(let t): return m.tags.contains(t)
        case .deviceID(let d): return m.kind == .device && m.id == d
        case .nodeID(let n): return m.kind == .node && m.id == n
        case nil: return false
        }
    }

    /// The only selectors that can name `m` (``matches(_:_:)`` is false for every other): so a
    /// member's sets and rules are found from what it carries, not by trying every selector of the
    /// policy. A test checks the two agree.
    public static func candidates(_ m: Mesh_V1_Member) -> [Mesh_V1_PolicySelector] {
        func sel(_ set: (inout Mesh_V1_PolicySelector) -> Void) -> Mesh_V1_PolicySelector {
            var s = Mesh_V1_PolicySelector()
            set(&s)
            return s
        }
        var out = [sel { $0.all = true }]
        for t in m.tags { out.append(sel { $0.tag = t }) }
        switch m.kind {
        case .device:
            out.append(sel { $0.deviceID = m.id })
            out.append(sel { $0.userID = m.ownerUserID })
            out.append(sel { $0.role = m.ownerRole })
            out.append(sel { $0.deviceType = m.deviceType })
        case .node:
            out.append(sel { $0.nodeID = m.id })
        default:
            return []
        }
        return out
    }

    /// Whether any selector of a side names `m`.
    public static func matches(_ side: [Mesh_V1_PolicySelector], _ m: Mesh_V1_Member) -> Bool {
        side.contains { matches($0, m) }
    }

    /// What a flow looks like to a rule: its protocol (unspecified for one that is not TCP, UDP or
    /// ICMP) and its destination port (0 for ICMP and other protocols).
    public struct Traffic: Sendable, Hashable {
        public var proto: Mesh_V1_PolicyProtocol
        public var port: UInt32

        public init(_ proto: Mesh_V1_PolicyProtocol, port: UInt32 = 0) {
            self.proto = proto
            self.port = port
        }

        /// Whether a rule's port list lets this traffic through (an empty list lets everything).
        public func passes(_ ports: [Mesh_V1_PolicyPort]) -> Bool {
            ports.isEmpty || ports.contains { p in
                guard p.protocol == proto else { return false }
                switch proto {
                case .tcp, .udp: return (p.first == 0 && p.last == 0) || (p.first...max(p.first, p.last)).contains(port)
                default: return true
                }
            }
        }
    }

    /// Why traffic is allowed or refused.
    public enum Verdict: Sendable, Equatable {
        /// The tenant has no rule.
        case open
        /// A node's mesh DNS.
        case meshDNS
        /// Allowed by this rule (the first that allows it).
        case rule(Mesh_V1_PolicyRule)
        /// No rule allows it.
        case refused
        /// One end does not take part in the mesh (a suspended device, or the mesh is off).
        case notInMesh(String)

        public var allowed: Bool {
            switch self {
            case .open, .meshDNS, .rule: true
            case .refused, .notInMesh: false
            }
        }

        /// A sentence for people (dry runs, meshctl).
        public var reason: String {
            switch self {
            case .open: "the tenant has no rules: everything is allowed"
            case .meshDNS: "the mesh DNS on every node is open to everything in the mesh"
            case .rule(let r): "allowed by rule \"\(r.name)\""
            case .refused: "no rule allows it: refused by default"
            case .notInMesh(let who): "\(who) does not take part in the mesh"
            }
        }
    }

    /// The verdict on traffic from `from` to `to`.
    public func verdict(from: Mesh_V1_Member, to: Mesh_V1_Member, traffic: Traffic, settings: Mesh_V1_TenantSettings) -> Verdict {
        func out(_ m: Mesh_V1_Member) -> Verdict { .notInMesh("\(m.kind.key) \(m.displayName.isEmpty ? m.id : m.displayName)") }
        guard PeerCatalog.isNamed(to, settings: settings) else { return out(to) }
        // The filter's DNS line names no source: anything that reaches a node may ask it.
        if !isOpen && Self.isMeshDNS(to: to, traffic) { return .meshDNS }
        guard PeerCatalog.isNamed(from, settings: settings) else { return out(from) }
        if isOpen { return .open }
        if let r = rules.first(where: { Self.matches($0.sources, from) && Self.matches($0.destinations, to) && traffic.passes($0.ports) }) {
            return .rule(r)
        }
        return .refused
    }

    /// Whether traffic to `to` is a query to a node's mesh DNS.
    public static func isMeshDNS(to: Mesh_V1_Member, _ traffic: Traffic) -> Bool {
        to.kind == .node && (traffic.proto == .tcp || traffic.proto == .udp) && traffic.port == dnsPort
    }

    /// Whether `from` may reach `to` on some protocol and port (what the DNS filter asks).
    public func mayReach(from: Mesh_V1_Member, to: Mesh_V1_Member) -> Bool {
        isOpen || rules.contains { Self.matches($0.sources, from) && Self.matches($0.destinations, to) }
    }
}

/// Which rules name a member as a source and as a destination, for every member of a tenant, so
/// that "may A reach B" costs a few word operations (the mesh DNS asks it on every query). A member
/// change costs what the member carries (``AccessPolicy/candidates(_:)``), not the tenant's size.
public struct ReachabilityIndex: Sendable {
    /// Per selector: bit i set when rule i lists it as a source (destination).
    private let sourceBits: [Mesh_V1_PolicySelector: [UInt64]]
    private let destinationBits: [Mesh_V1_PolicySelector: [UInt64]]
    /// Per member id: the rules that name it, as a source and as a destination.
    private var sources: [String: [UInt64]] = [:]
    private var destinations: [String: [UInt64]] = [:]
    private let words: Int
    /// True when there is no rule (everything is reachable).
    public let open: Bool

    /// The index of `policy` over the members that take part in the mesh.
    public init(policy: AccessPolicy, members: some Sequence<Mesh_V1_Member>, settings: Mesh_V1_TenantSettings) {
        open = policy.isOpen
        let words = (policy.rules.count + 63) / 64
        self.words = words
        var s: [Mesh_V1_PolicySelector: [UInt64]] = [:], d = s
        for (i, r) in policy.rules.enumerated() {
            for sel in r.sources { s[sel, default: [UInt64](repeating: 0, count: words)][i / 64] |= 1 << UInt64(i % 64) }
            for sel in r.destinations { d[sel, default: [UInt64](repeating: 0, count: words)][i / 64] |= 1 << UInt64(i % 64) }
        }
        sourceBits = s
        destinationBits = d
        guard !open else { return }
        for m in members { update(before: nil, after: m, settings: settings) }
    }

    /// Follows one member's change (`after` nil: removed).
    public mutating func update(before: Mesh_V1_Member?, after: Mesh_V1_Member?, settings: Mesh_V1_TenantSettings) {
        guard !open else { return }
        if let before { sources[before.id] = nil; destinations[before.id] = nil }
        guard let m = after, PeerCatalog.isNamed(m, settings: settings) else { return }
        var src: [UInt64]?, dst: [UInt64]?
        for c in AccessPolicy.candidates(m) {
            if let b = sourceBits[c] { src = zip(src ?? b.map { _ in 0 }, b).map { $0 | $1 } }
            if let b = destinationBits[c] { dst = zip(dst ?? b.map { _ in 0 }, b).map { $0 | $1 } }
        }
        sources[m.id] = src
        destinations[m.id] = dst
    }

    /// Whether member `from` may reach member `to` on some port.
    public func mayReach(from: String, to: String) -> Bool {
        if open { return true }
        guard let s = sources[from], let d = destinations[to] else { return false }
        for i in 0..<words where s[i] & d[i] != 0 { return true }
        return false
    }
}

// MARK: Text forms

extension Mesh_V1_PolicyProtocol {
    /// "tcp", "udp" or "icmp".
    public var key: String {
        switch self {
        case .tcp: "tcp"
        case .udp: "udp"
        case .icmp: "icmp"
        default: "unspecified"
        }
    }

    public init?(key: String) {
        switch key {
        case "tcp": self = .tcp
        case "udp": self = .udp
        case "icmp": self = .icmp
        default: return nil
        }
    }
}

/// The text forms of selectors and ports, shared by the HTTP API, meshctl and the page:
///
/// | selector | names |
/// |---|---|
/// | `*` | every member |
/// | `user:<uuid>` | every device the user owns |
/// | `role:owner`, `role:admin` | every device whose owner has the role |
/// | `type:iphone`, `type:android`, `type:laptop`, `type:other` | every device of the type |
/// | `tag:<tag>` | every device and node with the tag |
/// | `device:<uuid>`, `node:<uuid>` | one member |
///
/// Ports: `tcp`, `udp` (every port), `tcp:22`, `udp:8000-8100`, `icmp`.
public enum PolicyText {
    /// Parses a selector; `invalidArgument` naming `field` otherwise. Ids and tags are lowercased.
    public static func selector(_ raw: String, field: String) throws(MeshError) -> Mesh_V1_PolicySelector {
        let s = raw.trimmingCharacters(in: .whitespaces)
        var sel = Mesh_V1_PolicySelector()
        if s == "*" {
            sel.all = true
            return sel
        }
        guard let colon = s.firstIndex(of: ":") else {
            throw .invalidArgument(field: field, message: "\(field): \"\(raw.prefix(80))\" is not a selector (*, user:<id>, role:<role>, type:<type>, tag:<tag>, device:<id> or node:<id>)")
        }
        let kind = s[..<colon].lowercased(), value = String(s[s.index(after: colon)...])
        switch kind {
        case "user": sel.userID = try PolicyValidation.uuid(value, field: field, what: "a user id")
        case "device": sel.deviceID = try PolicyValidation.uuid(value, field: field, what: "a device id")
        case "node": sel.nodeID = try PolicyValidation.uuid(value, field: field, what: "a node id")
        case "tag": sel.tag = try PolicyValidation.tag(value, field: field)
        case "role":
            guard let r = Mesh_V1_Role(key: value), r != .unspecified else {
                throw .invalidArgument(field: field, message: "\(field): role must be owner or admin")
            }
            sel.role = r
        case "type":
            guard let t = Mesh_V1_DeviceType(key: value), t != .unspecified else {
                throw .invalidArgument(field: field, message: "\(field): type must be iphone, android, laptop or other")
            }
            sel.deviceType = t
        default:
            throw .invalidArgument(field: field, message: "\(field): unknown selector kind \"\(kind.prefix(20))\" (user, role, type, tag, device, node or *)")
        }
        return sel
    }

    /// The text form of a selector.
    public static func text(_ s: Mesh_V1_PolicySelector) -> String {
        switch s.target {
        case .all: "*"
        case .userID(let u): "user:\(u)"
        case .role(let r): "role:\(r.key)"
        case .deviceType(let t): "type:\(t.key)"
        case .tag(let t): "tag:\(t)"
        case .deviceID(let d): "device:\(d)"
        case .nodeID(let n): "node:\(n)"
        case nil: ""
        }
    }

    /// Parses a port entry: `tcp`, `udp`, `icmp`, `tcp:22`, `udp:8000-8100`.
    public static func port(_ raw: String, field: String) throws(MeshError) -> Mesh_V1_PolicyPort {
        let s = raw.trimmingCharacters(in: .whitespaces).lowercased()
        let parts = s.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        guard let proto = Mesh_V1_PolicyProtocol(key: String(parts[0])) else {
            throw .invalidArgument(field: field, message: "\(field): \"\(raw.prefix(40))\" is not a port (tcp, udp or icmp, optionally tcp:22 or udp:1000-2000)")
        }
        var p = Mesh_V1_PolicyPort()
        p.protocol = proto
        guard parts.count == 2 else { return p }
        guard proto != .icmp else { throw .invalidArgument(field: field, message: "\(field): icmp has no ports") }
        let range = parts[1].split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard let first = UInt32(range[0]), let last = range.count == 2 ? UInt32(range[1]) : first, first > 0 else {
            throw .invalidArgument(field: field, message: "\(field): \"\(raw.prefix(40))\" must name a port (1-65535) or a range such as 8000-8100")
        }
        p.first = first
        p.last = last
        return try PolicyValidation.port(p, field: field)
    }

    /// The members of a rule object in JSON (the HTTP API and `meshctl policy apply` files).
    public static let ruleFields: Set<String> = ["name", "sources", "destinations", "ports"]

    /// An array of strings from parsed JSON (absent or null: empty), or `invalidArgument` naming the
    /// element at fault.
    public static func strings(_ value: Any?, field: String) throws(MeshError) -> [String] {
        guard let value, !(value is NSNull) else { return [] }
        guard let list = value as? [Any] else { throw .invalidArgument(field: field, message: "\(field) must be an array of strings") }
        var out: [String] = []
        for (i, v) in list.enumerated() {
            guard let s = v as? String else { throw .invalidArgument(field: "\(field)[\(i)]", message: "\(field)[\(i)] must be a string") }
            out.append(s)
        }
        return out
    }

    /// A rule from a parsed JSON object `{"id"?, "name", "sources": [...], "destinations": [...], "ports"?: [...]}`
    /// in the text forms; `path` prefixes the field names ("rules[2]."). Only the form is checked
    /// here; ``PolicyValidation/rule(_:path:)`` checks the rest.
    public static func rule(json value: Any, path: String, allowID: Bool) throws(MeshError) -> Mesh_V1_PolicyRule {
        let at = path.isEmpty ? "rule" : String(path.dropLast())
        guard let object = value as? [String: Any] else { throw .invalidArgument(field: at, message: "\(at) must be an object") }
        let allowed = allowID ? ruleFields.union(["id"]) : ruleFields
        if let unknown = object.keys.sorted().first(where: { !allowed.contains($0) }) {
            throw .invalidArgument(field: "\(path)\(unknown)", message: "unknown field \"\(path)\(unknown)\"")
        }
        var r = Mesh_V1_PolicyRule()
        if allowID, let id = object["id"], !(id is NSNull) {
            guard let s = id as? String else { throw .invalidArgument(field: "\(path)id", message: "\(path)id must be a string") }
            r.id = s
        }
        guard let name = object["name"] as? String else { throw .invalidArgument(field: "\(path)name", message: "\(path)name is required (a string)") }
        r.name = name
        for side in ["sources", "destinations"] {
            guard let v = object[side], !(v is NSNull) else { throw .invalidArgument(field: "\(path)\(side)", message: "\(path)\(side) is required") }
            var selectors: [Mesh_V1_PolicySelector] = []
            for (i, t) in try strings(v, field: "\(path)\(side)").enumerated() {
                selectors.append(try selector(t, field: "\(path)\(side)[\(i)]"))
            }
            if side == "sources" { r.sources = selectors } else { r.destinations = selectors }
        }
        for (i, t) in try strings(object["ports"], field: "\(path)ports").enumerated() {
            r.ports.append(try port(t, field: "\(path)ports[\(i)]"))
        }
        return r
    }

    /// The text form of a port entry.
    public static func text(_ p: Mesh_V1_PolicyPort) -> String {
        if p.protocol == .icmp || (p.first == 0 && p.last == 0) { return p.protocol.key }
        return p.first == p.last ? "\(p.protocol.key):\(p.first)" : "\(p.protocol.key):\(p.first)-\(p.last)"
    }
}

// MARK: Validation

/// The rules a policy must obey before it is stored: well-formed rules (a 400 names the field, such
/// as `rules[2].sources[0]`), ids that name objects of the tenant, the plan's cap, and a size that
/// fits one message to the nodes.
public enum PolicyValidation {
    /// At most this many selectors on each side of a rule, and port entries per rule.
    public static let maxSelectors = 16
    public static let maxPorts = 16
    /// At most this many tags on a device or node.
    public static let maxTags = 16
    /// The whole rule set, encoded, must fit in this many bytes: it travels to every node as one
    /// message (NATS refuses payloads above 1 MiB by default).
    public static let maxEncodedBytes = 256 * 1024

    /// A lowercase UUID, or `invalidArgument`.
    static func uuid(_ raw: String, field: String, what: String) throws(MeshError) -> String {
        let s = raw.trimmingCharacters(in: .whitespaces).lowercased()
        let hex = s.unicodeScalars.filter { $0 != "-" }
        guard s.count == 36, hex.count == 32, hex.allSatisfy({ ($0 >= "0" && $0 <= "9") || ($0 >= "a" && $0 <= "f") }),
              [8, 13, 18, 23].allSatisfy({ s[s.index(s.startIndex, offsetBy: $0)] == "-" }) else {
            throw .invalidArgument(field: field, message: "\(field): \"\(raw.prefix(60))\" is not \(what) (a UUID)")
        }
        return s
    }

    /// A tag: 1–63 of a–z, 0–9 and '-', starting with a letter or digit (lowercased).
    public static func tag(_ raw: String, field: String) throws(MeshError) -> String {
        let t = raw.trimmingCharacters(in: .whitespaces).lowercased()
        let ok = (1...63).contains(t.utf8.count) && !t.hasPrefix("-")
            && t.unicodeScalars.allSatisfy { ($0 >= "a" && $0 <= "z") || ($0 >= "0" && $0 <= "9") || $0 == "-" }
        guard ok else {
            throw .invalidArgument(field: field, message: "\(field): a tag is 1 to 63 characters of a-z, 0-9 and '-', not starting with '-'")
        }
        return t
    }

    /// A member's tags: each valid, no duplicates, at most ``maxTags``; sorted.
    public static func tags(_ raw: [String], field: String = "tags") throws(MeshError) -> [String] {
        guard raw.count <= maxTags else { throw .invalidArgument(field: field, message: "at most \(maxTags) tags") }
        var out: [String] = []
        for (i, t) in raw.enumerated() {
            let tag = try tag(t, field: "\(field)[\(i)]")
            guard !out.contains(tag) else { throw .invalidArgument(field: "\(field)[\(i)]", message: "\(field)[\(i)]: tag \"\(tag)\" is listed twice") }
            out.append(tag)
        }
        return out.sorted()
    }

    /// A checked port entry.
    static func port(_ p: Mesh_V1_PolicyPort, field: String) throws(MeshError) -> Mesh_V1_PolicyPort {
        switch p.protocol {
        case .tcp, .udp:
            if p.first == 0 && p.last == 0 { return p }
            guard (1...65535).contains(p.first), (1...65535).contains(p.last) else {
                throw .invalidArgument(field: field, message: "\(field): ports are 1 to 65535")
            }
            guard p.first <= p.last else { throw .invalidArgument(field: field, message: "\(field): a range must not end before it starts") }
            return p
        case .icmp:
            guard p.first == 0 && p.last == 0 else { throw .invalidArgument(field: field, message: "\(field): icmp has no ports") }
            return p
        default:
            throw .invalidArgument(field: field, message: "\(field): protocol must be tcp, udp or icmp")
        }
    }

    /// A checked selector, ids and tags lowercased.
    static func selector(_ s: Mesh_V1_PolicySelector, field: String) throws(MeshError) -> Mesh_V1_PolicySelector {
        var out = Mesh_V1_PolicySelector()
        switch s.target {
        case .all(let all):
            guard all else { throw .invalidArgument(field: field, message: "\(field): \"all\" must be true") }
            out.all = true
        case .userID(let u): out.userID = try uuid(u, field: field, what: "a user id")
        case .deviceID(let d): out.deviceID = try uuid(d, field: field, what: "a device id")
        case .nodeID(let n): out.nodeID = try uuid(n, field: field, what: "a node id")
        case .tag(let t): out.tag = try tag(t, field: field)
        case .role(let r):
            guard r == .owner || r == .admin else { throw .invalidArgument(field: field, message: "\(field): role must be owner or admin") }
            out.role = r
        case .deviceType(let t):
            guard [.iphone, .android, .laptop, .other].contains(t) else {
                throw .invalidArgument(field: field, message: "\(field): type must be iphone, android, laptop or other")
            }
            out.deviceType = t
        case nil:
            throw .invalidArgument(field: field, message: "\(field): a selector must name something")
        }
        return out
    }

    /// A checked rule (`path` prefixes the field names, e.g. "rules[2]."; empty for a lone rule).
    /// The id is kept as given (ProvisionSvc assigns new ones).
    public static func rule(_ r: Mesh_V1_PolicyRule, path: String = "") throws(MeshError) -> Mesh_V1_PolicyRule {
        var out = Mesh_V1_PolicyRule()
        if !r.id.isEmpty { out.id = try uuid(r.id, field: "\(path)id", what: "a rule id") }
        out.name = try DisplayName.validate(r.name, field: "\(path)name")
        for (side, list) in [("sources", r.sources), ("destinations", r.destinations)] {
            guard !list.isEmpty else { throw .invalidArgument(field: "\(path)\(side)", message: "\(path)\(side) must name at least one selector") }
            guard list.count <= maxSelectors else {
                throw .invalidArgument(field: "\(path)\(side)", message: "\(path)\(side): at most \(maxSelectors) selectors")
            }
            var checked: [Mesh_V1_PolicySelector] = []
            for (i, s) in list.enumerated() {
                let c = try selector(s, field: "\(path)\(side)[\(i)]")
                if !checked.contains(c) { checked.append(c) }
            }
            if side == "sources" { out.sources = checked } else { out.destinations = checked }
        }
        guard r.ports.count <= maxPorts else { throw .invalidArgument(field: "\(path)ports", message: "\(path)ports: at most \(maxPorts) entries") }
        for (i, p) in r.ports.enumerated() {
            let c = try port(p, field: "\(path)ports[\(i)]")
            if !out.ports.contains(c) { out.ports.append(c) }
        }
        return out
    }

    /// The ids a set of rules names, each with the field that names it first.
    public struct References: Sendable, Equatable {
        public var users: [String: String] = [:]
        public var devices: [String: String] = [:]
        public var nodes: [String: String] = [:]

        public init() {}

        public var isEmpty: Bool { users.isEmpty && devices.isEmpty && nodes.isEmpty }
    }

    /// What `rules` (checked ones) name; `path(i)` is the field prefix of rule i.
    public static func references(_ rules: [Mesh_V1_PolicyRule], path: (Int) -> String) -> References {
        var refs = References()
        for (i, r) in rules.enumerated() {
            for (side, list) in [("sources", r.sources), ("destinations", r.destinations)] {
                for (j, s) in list.enumerated() {
                    let field = "\(path(i))\(side)[\(j)]"
                    switch s.target {
                    case .userID(let u): if refs.users[u] == nil { refs.users[u] = field }
                    case .deviceID(let d): if refs.devices[d] == nil { refs.devices[d] = field }
                    case .nodeID(let n): if refs.nodes[n] == nil { refs.nodes[n] = field }
                    default: break
                    }
                }
            }
        }
        return refs
    }

    /// Refuses ids the tenant does not have: another tenant's objects are as unknown as made-up ones.
    public static func checkReferences(_ refs: References, users: Set<String>, devices: Set<String>, nodes: Set<String>) throws(MeshError) {
        for (kind, named, known) in [("user", refs.users, users), ("device", refs.devices, devices), ("node", refs.nodes, nodes)] {
            if let (id, field) = named.sorted(by: { $0.value < $1.value }).first(where: { !known.contains($0.key) }) {
                throw .invalidArgument(field: field, message: "\(field): this tenant has no \(kind) \(id)")
            }
        }
    }

    /// Refuses a rule set the plan or the message size does not allow.
    public static func checkSize(_ rules: [Mesh_V1_PolicyRule], plan: PlanPolicy) throws(MeshError) {
        if let cap = plan.policyRuleCap, rules.count > cap {
            throw .ruleCapReached(plan: plan.plan, cap: cap)
        }
        var set = Mesh_V1_PolicySet()
        set.rules = rules
        let size = (try? set.serializedBytes() as [UInt8])?.count ?? Int.max
        guard size <= maxEncodedBytes else {
            throw .invalidArgument(field: "rules", message: "the rules take \(size) bytes encoded; at most \(maxEncodedBytes) fit in one change for the nodes")
        }
    }
}
