import MeshDNS
import MeshDomain
import MeshNet
import MeshProto
import Synchronization

/// Which names of the zone the mesh DNS tells each asker, when the tenant turns the DNS filter on
/// (`dns_filtered`): a member sees its own name and the names of the members it may reach on some
/// port (``ReachabilityIndex``); an address that is no member sees none. With the filter off, or
/// with no rule, every name is visible. The agent keeps it in step with every change it applies;
/// queries read it under a lock, at the cost of two dictionary lookups and a few word operations.
public final class DNSPolicyFilter: Sendable {
    struct View: Sendable {
        var index: ReachabilityIndex
        /// Member ids by address, and by DNS name (lowercased, without the trailing dot).
        var byAddress: [IPAddress: String]
        var byName: [String: String]
        var domain: String
    }

    /// nil: not filtering.
    private let view = Mutex<View?>(nil)

    public init() {}

    /// Whether `client` may see `name`.
    public func allows(client: IPAddress, name: DNSName) -> Bool {
        view.withLock { v in
            guard let v else { return true }
            guard let asker = v.byAddress[client] else { return false }
            guard let target = v.byName[name.withoutTrailingDot.lowercased()] else { return false }
            return asker == target || v.index.mayReach(from: asker, to: target)
        }
    }

    /// Rebuilds the view from the whole mesh.
    func rebuild(_ mesh: MeshState) {
        guard mesh.settings.dnsFiltered else {
            view.withLock { $0 = nil }
            return
        }
        var v = View(index: ReachabilityIndex(policy: AccessPolicy(mesh.policy), members: mesh.members.values, settings: mesh.settings),
                     byAddress: [:], byName: [:], domain: mesh.settings.domain)
        for m in mesh.members.values { Self.add(m, to: &v, settings: mesh.settings) }
        view.withLock { $0 = v }
    }

    /// Follows one member's change.
    func update(before: Mesh_V1_Member?, after: Mesh_V1_Member?, mesh: MeshState) {
        view.withLock { v in
            guard v != nil else { return }
            if let before { Self.remove(before, from: &v!) }
            if let after { Self.add(after, to: &v!, settings: mesh.settings) }
            v!.index.update(before: before, after: after, settings: mesh.settings)
        }
    }

    static func add(_ m: Mesh_V1_Member, to v: inout View, settings: Mesh_V1_TenantSettings) {
        guard PeerCatalog.isNamed(m, settings: settings) else { return }
        for a in [m.ipv4, m.ipv6].compactMap(IPAddress.init) { v.byAddress[a] = m.id }
        v.byName[MeshName.dnsName(slug: m.slug, domain: v.domain).lowercased()] = m.id
    }

    static func remove(_ m: Mesh_V1_Member, from v: inout View) {
        for a in [m.ipv4, m.ipv6].compactMap(IPAddress.init) where v.byAddress[a] == m.id { v.byAddress[a] = nil }
        let name = MeshName.dnsName(slug: m.slug, domain: v.domain).lowercased()
        if v.byName[name] == m.id { v.byName[name] = nil }
    }
}
