import MeshDomain
import MeshNet
import MeshProto

/// The packet filter one node holds for its tenant's access policy, as data: named address sets
/// and the lines that accept traffic between them. Compiling is pure (``compile(policy:members:settings:interface:)``);
/// ``script()`` renders the whole nftables table for one atomic `nft -f` transaction, and
/// ``update(before:after:settings:)`` the element changes one member causes. ``allows(_:)`` judges
/// a flow exactly as the rendered rules do, so the node can tell which tracked flows a change
/// revoked (docs/policies.md, "On the nodes").
///
/// The table (`table inet quazzar_<interface>`), for IPv4 and IPv6 alike:
///
/// ```
/// chain mesh {
///     ct state established,related accept          # replies of allowed flows
///     ip daddr @nodes4 meta l4proto { tcp, udp } th dport 53 accept   # every node's mesh DNS
///     ip saddr @<source set> ip daddr @<destination set> tcp dport { 22 } accept   # one line per rule side pair
///     counter drop
/// }
/// chain input   { type filter hook input priority filter; policy accept; iifname "wg-quazzar0" jump mesh }
/// chain forward { type filter hook forward priority filter; policy accept; iifname "wg-quazzar0" jump mesh }
/// chain output  { type filter hook output priority filter; policy accept; oifname "wg-quazzar0" jump mesh }
/// ```
///
/// Every distinct selector of the policy gets one set per family, shared by every rule that names
/// it (a role or a tag used in a thousand rules is one set); a rule side with several selectors
/// gets a set of its own, the union of theirs, so a rule stays one line per family and protocol.
public struct FilterPlan: Sendable, Equatable {
    public enum Family: Sendable, Hashable {
        case v4, v6
    }

    /// A named set of addresses of one family.
    public struct AddressSet: Sendable, Equatable {
        public let name: String
        public let family: Family
        public var elements: Set<IPAddress>
    }

    /// What a line matches beyond its addresses.
    public enum Match: Sendable, Equatable {
        /// Every protocol and port.
        case any
        /// TCP or UDP to these port ranges (empty: every port).
        case ports(Mesh_V1_PolicyProtocol, [ClosedRange<UInt32>])
        /// ICMP (IPv4) or ICMPv6 (IPv6).
        case icmp
    }

    /// One accept line: traffic of `family` from an address in `source` to one in `destination`.
    public struct Line: Sendable, Equatable {
        public let family: Family
        public let source: String
        public let destination: String
        public let match: Match
        /// The rule it comes from (its id).
        public let rule: String
    }

    /// The nftables table this node's filter lives in.
    public let table: String
    public let interface: String
    /// The policy version compiled.
    public let version: UInt64
    public let ruleCount: Int
    /// Sets by name.
    public private(set) var sets: [String: AddressSet]
    public let lines: [Line]
    /// Per selector: the sets a member it names belongs to (its own set, and the union sets of rule
    /// sides that list it), per family.
    let selectorSets: [Mesh_V1_PolicySelector: [Family: [String]]]

    /// The set of every node's addresses (the mesh DNS stays open to every member).
    static func nodesSet(_ f: Family) -> String { f == .v4 ? "nodes4" : "nodes6" }

    /// The table of an interface: `quazzar_` and the interface name with every character other than
    /// a letter or digit made `_`.
    public static func tableName(interface: String) -> String {
        "quazzar_" + String(interface.unicodeScalars.map { ($0.properties.isAlphabetic && $0.isASCII) || ("0"..."9").contains($0) ? Character($0) : "_" })
    }

    // MARK: Compiling

    /// The filter for `policy` over `members`, or nil when the policy has no rule (nothing is filtered).
    public static func compile(policy: Mesh_V1_PolicySet, members: some Collection<Mesh_V1_Member>, settings: Mesh_V1_TenantSettings,
                               interface: String) -> FilterPlan? {
        guard !policy.rules.isEmpty else { return nil }
        var sets: [String: AddressSet] = [:]
        var selectorSets: [Mesh_V1_PolicySelector: [Family: [String]]] = [:]
        func addSet(_ name: String, _ f: Family) {
            if sets[name] == nil { sets[name] = AddressSet(name: name, family: f, elements: []) }
        }
        for f in [Family.v4, .v6] { addSet(nodesSet(f), f) }
        var lines: [Line] = []
        for (index, rule) in policy.rules.enumerated() {
            var sideSets: [[Family: String]] = []
            for (side, selectors) in [("s", rule.sources), ("d", rule.destinations)] {
                var names: [Family: String] = [:]
                for f in [Family.v4, .v6] {
                    for sel in selectors {
                        let own = setName(sel, f)
                        addSet(own, f)
                        if selectorSets[sel]?[f]?.contains(own) != true { selectorSets[sel, default: [:]][f, default: []].append(own) }
                    }
                    if selectors.count == 1 {
                        names[f] = setName(selectors[0], f)
                    } else {
                        // A side of several selectors: one set, the union of theirs.
                        let union = "\(side)\(f == .v4 ? "4" : "6")_r\(index)"
                        addSet(union, f)
                        for sel in selectors where selectorSets[sel]?[f]?.contains(union) != true {
                            selectorSets[sel, default: [:]][f, default: []].append(union)
                        }
                        names[f] = union
                    }
                }
                sideSets.append(names)
            }
            for f in [Family.v4, .v6] {
                for m in matches(rule.ports) {
                    lines.append(Line(family: f, source: sideSets[0][f]!, destination: sideSets[1][f]!, match: m, rule: rule.id))
                }
            }
        }
        var plan = FilterPlan(table: tableName(interface: interface), interface: interface, version: policy.version,
                              ruleCount: policy.rules.count, sets: sets, lines: lines, selectorSets: selectorSets)
        for m in members {
            for (name, address) in plan.memberships(m, settings: settings) { plan.sets[name]?.elements.insert(address) }
        }
        return plan
    }

    /// The matches of a rule's port list: one per protocol it names, or `any` for none.
    static func matches(_ ports: [Mesh_V1_PolicyPort]) -> [Match] {
        guard !ports.isEmpty else { return [.any] }
        var out: [Match] = []
        for proto in [Mesh_V1_PolicyProtocol.tcp, .udp] {
            let entries = ports.filter { $0.protocol == proto }
            guard !entries.isEmpty else { continue }
            if entries.contains(where: { $0.first == 0 && $0.last == 0 }) {
                out.append(.ports(proto, []))
            } else {
                out.append(.ports(proto, entries.map { $0.first...max($0.first, $0.last) }))
            }
        }
        if ports.contains(where: { $0.protocol == .icmp }) { out.append(.icmp) }
        return out
    }

    /// The set a selector's members go to. Names are made of the selector (ids without dashes, tags
    /// with `_` for `-`), so they are stable while the policy is.
    static func setName(_ s: Mesh_V1_PolicySelector, _ f: Family) -> String {
        let v = f == .v4 ? "4" : "6"
        func hex(_ id: String) -> String { id.replacingOccurrences(of: "-", with: "") }
        switch s.target {
        case .all: return "all\(v)"
        case .userID(let u): return "u\(v)_\(hex(u))"
        case .role(let r): return "r\(v)_\(r.key)"
        case .deviceType(let t): return "t\(v)_\(t.key)"
        case .tag(let t): return "g\(v)_\(t.replacingOccurrences(of: "-", with: "_"))"
        case .deviceID(let d): return "m\(v)_\(hex(d))"
        case .nodeID(let n): return "m\(v)_\(hex(n))"
        case nil: return "none\(v)"
        }
    }

    /// Every (set, address) member `m` contributes.
    func memberships(_ m: Mesh_V1_Member, settings: Mesh_V1_TenantSettings) -> [(String, IPAddress)] {
        guard PeerCatalog.isNamed(m, settings: settings) else { return [] }
        let addresses: [(Family, IPAddress)] = [(.v4, m.ipv4), (.v6, m.ipv6)].compactMap { f, text in IPAddress(text).map { (f, $0) } }
        var out: [(String, IPAddress)] = []
        for (f, a) in addresses {
            if m.kind == .node { out.append((Self.nodesSet(f), a)) }
            for c in AccessPolicy.candidates(m) {
                for name in selectorSets[c]?[f] ?? [] { out.append((name, a)) }
            }
        }
        return out
    }

    // MARK: Member changes

    /// The element changes that turn member `before` into `after` (either nil for an addition or a
    /// removal), applied to the plan.
    public struct ElementChanges: Sendable, Equatable {
        public var added: [String: Set<IPAddress>] = [:]
        public var removed: [String: Set<IPAddress>] = [:]
        public var isEmpty: Bool { added.isEmpty && removed.isEmpty }
    }

    /// Applies one member's change to the sets and returns what changed.
    public mutating func update(before: Mesh_V1_Member?, after: Mesh_V1_Member?, settings: Mesh_V1_TenantSettings) -> ElementChanges {
        struct Pair: Hashable {
            let set: String
            let address: IPAddress
        }
        let old = Set((before.map { memberships($0, settings: settings) } ?? []).map { Pair(set: $0.0, address: $0.1) })
        let new = Set((after.map { memberships($0, settings: settings) } ?? []).map { Pair(set: $0.0, address: $0.1) })
        var changes = ElementChanges()
        for p in old.subtracting(new) where sets[p.set]?.elements.remove(p.address) != nil {
            changes.removed[p.set, default: []].insert(p.address)
        }
        for p in new.subtracting(old) where sets[p.set]?.elements.insert(p.address).inserted == true {
            changes.added[p.set, default: []].insert(p.address)
        }
        return changes
    }

    // MARK: Rendering

    /// The script that replaces the node's table with this plan, in one transaction: create the table
    /// if missing, delete it, create it whole. The kernel swaps the old rules for the new at once.
    public func script() -> String {
        var out = "table inet \(table) {}\ndelete table inet \(table)\ntable inet \(table) {\n"
        out.reserveCapacity(64 * sets.count + 100 * lines.count + sets.values.reduce(0) { $0 + 24 * $1.elements.count })
        for s in sets.values.sorted(by: { $0.name < $1.name }) {
            out += "\tset \(s.name) {\n\t\ttype \(s.family == .v4 ? "ipv4_addr" : "ipv6_addr")\n"
            if !s.elements.isEmpty {
                out += "\t\telements = { "
                out += s.elements.sorted().map(\.description).joined(separator: ", ")
                out += " }\n"
            }
            out += "\t}\n"
        }
        out += "\tchain mesh {\n\t\tct state established,related accept\n"
        out += "\t\tip daddr @\(Self.nodesSet(.v4)) meta l4proto { tcp, udp } th dport \(AccessPolicy.dnsPort) accept\n"
        out += "\t\tip6 daddr @\(Self.nodesSet(.v6)) meta l4proto { tcp, udp } th dport \(AccessPolicy.dnsPort) accept\n"
        for l in lines { out += "\t\t\(Self.render(l))\n" }
        out += "\t\tcounter drop\n\t}\n"
        let quoted = "\"\(interface)\""
        out += "\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n\t\tiifname \(quoted) jump mesh\n\t}\n"
        out += "\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n\t\tiifname \(quoted) jump mesh\n\t}\n"
        out += "\tchain output {\n\t\ttype filter hook output priority filter; policy accept;\n\t\toifname \(quoted) jump mesh\n\t}\n"
        out += "}\n"
        return out
    }

    static func render(_ l: Line) -> String {
        let ip = l.family == .v4 ? "ip" : "ip6"
        var s = "\(ip) saddr @\(l.source) \(ip) daddr @\(l.destination)"
        switch l.match {
        case .any: break
        case .ports(let proto, let ranges):
            if ranges.isEmpty {
                s += " meta l4proto \(proto.key)"
            } else {
                s += " \(proto.key) dport { " + ranges.map { $0.lowerBound == $0.upperBound ? "\($0.lowerBound)" : "\($0.lowerBound)-\($0.upperBound)" }
                    .joined(separator: ", ") + " }"
            }
        case .icmp:
            s += l.family == .v4 ? " meta l4proto icmp" : " meta l4proto ipv6-icmp"
        }
        return s + " accept"
    }

    /// The script that removes the node's table (no rule: nothing is filtered).
    public static func removal(table: String) -> String {
        "table inet \(table) {}\ndelete table inet \(table)\n"
    }

    /// The script that applies element changes in one transaction.
    public func script(for changes: ElementChanges) -> String {
        var out = ""
        for (name, elements) in changes.removed.sorted(by: { $0.key < $1.key }) {
            out += "delete element inet \(table) \(name) { \(elements.sorted().map(\.description).joined(separator: ", ")) }\n"
        }
        for (name, elements) in changes.added.sorted(by: { $0.key < $1.key }) {
            out += "add element inet \(table) \(name) { \(elements.sorted().map(\.description).joined(separator: ", ")) }\n"
        }
        return out
    }

    // MARK: Judging flows

    /// Whether the filter accepts a new flow: what the rendered rules decide for its first packet.
    public func allows(_ flow: TrackedFlow) -> Bool {
        let f: Family
        switch (flow.source, flow.destination) {
        case (.v4, .v4): f = .v4
        case (.v6, .v6): f = .v6
        default: return false
        }
        if (flow.proto == .tcp || flow.proto == .udp) && flow.port == AccessPolicy.dnsPort,
           sets[Self.nodesSet(f)]?.elements.contains(flow.destination) == true {
            return true
        }
        return lines.contains { l in
            guard l.family == f, sets[l.source]?.elements.contains(flow.source) == true,
                  sets[l.destination]?.elements.contains(flow.destination) == true else { return false }
            switch l.match {
            case .any: return true
            case .icmp: return flow.proto == .icmp
            case .ports(let proto, let ranges): return flow.proto == proto && (ranges.isEmpty || ranges.contains { $0.contains(flow.port) })
            }
        }
    }
}

/// A flow the kernel tracks (one `conntrack -L` line): its original direction.
public struct TrackedFlow: Sendable, Hashable {
    /// TCP, UDP, ICMP (ICMPv6 too), or unspecified for any other protocol.
    public var proto: Mesh_V1_PolicyProtocol
    /// The protocol as conntrack names it ("tcp", "icmpv6", "gre", …), for deleting it.
    public var protoName: String
    public var source: IPAddress
    public var destination: IPAddress
    /// The destination port (TCP and UDP), else 0.
    public var port: UInt32

    public init(proto: Mesh_V1_PolicyProtocol, protoName: String, source: IPAddress, destination: IPAddress, port: UInt32) {
        self.proto = proto
        self.protoName = protoName
        self.source = source
        self.destination = destination
        self.port = port
    }

    /// Parses one line of `conntrack -L` (the first `src=`, `dst=` and `dport=` are the original
    /// direction); nil for a line that is not a flow.
    public init?(conntrackLine line: Substring) {
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        guard let name = fields.first else { return nil }
        var src: IPAddress?, dst: IPAddress?, dport: UInt32?
        for f in fields.dropFirst() {
            if f.hasPrefix("src=") {
                // A second src= starts the reply direction.
                if src != nil { break }
                src = IPAddress(String(f.dropFirst(4)))
            } else if dst == nil, f.hasPrefix("dst=") {
                dst = IPAddress(String(f.dropFirst(4)))
            } else if dport == nil, f.hasPrefix("dport=") {
                dport = UInt32(f.dropFirst(6))
            }
        }
        guard let src, let dst else { return nil }
        protoName = String(name)
        switch name {
        case "tcp": proto = .tcp
        case "udp": proto = .udp
        case "icmp", "icmpv6": proto = .icmp
        default: proto = .unspecified
        }
        source = src
        destination = dst
        port = (proto == .tcp || proto == .udp) ? (dport ?? 0) : 0
    }

    /// The `conntrack -D` arguments that delete this flow and every other with the same verdict
    /// (same protocol, addresses and destination port).
    public var deleteArguments: [String] {
        var args = ["-D", "-p", protoName, "-s", source.description, "-d", destination.description]
        if proto == .tcp || proto == .udp { args += ["--dport", String(port)] }
        return args
    }
}
