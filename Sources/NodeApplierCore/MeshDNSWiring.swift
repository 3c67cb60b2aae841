import Foundation
import Logging
import MeshDNS
import MeshDomain
import MeshNet
import MeshProto
import ServiceLifecycle

/// Mesh DNS on the node, the way MagicDNS serves names from the node itself: a resolver on the
/// node's mesh addresses answers `<slug>.<domain>` from the agent's view of the tenant (no lookup
/// per query). The zone follows every change the agent applies (one name at a time for a delta, the
/// whole zone after a full sync or new settings), so a deleted, suspended or renamed device stops
/// resolving as soon as the node has applied the change. The domain is the tenant's setting. Names outside the zone are
/// forwarded to the host's resolvers (or refused), because device configs point their `DNS =` at
/// the nodes.
public final class MeshDNSWiring: Sendable {
    let config: NodeConfiguration
    let identity: NodeIdentity
    let logger: Logger
    let zone: MeshDNSZone?
    let server: MeshDNSServer?

    public init(config: NodeConfiguration, identity: NodeIdentity, logger: Logger, dnsFilter: DNSPolicyFilter? = nil) {
        self.config = config
        self.identity = identity
        self.logger = logger
        let addresses = [identity.ipv4, identity.ipv6].compactMap(IPAddress.init)
        // The tenant's own domain replaces the default with the first full sync.
        guard let zoneConfig = try? MeshDNSZoneConfiguration(origin: TenantDefaults.domain, nameServerAddresses: addresses) else {
            zone = nil
            server = nil
            return
        }
        let zone = MeshDNSZone(configuration: zoneConfig, logger: logger)
        self.zone = zone
        guard config.dnsPort != 0 else {
            server = nil
            return
        }
        // With the tenant's DNS filter on, a device is told only the names it may reach.
        var visibility: MeshDNSVisibility?
        if let dnsFilter { visibility = { client, name in dnsFilter.allows(client: client, name: name) } }
        let policy: MeshDNSOutsideZonePolicy = config.dnsOutsideZone == "refuse"
            ? .refuse : .forward(to: MeshDNSOutsideZonePolicy.systemResolvers(excluding: addresses))
        server = MeshDNSServer(zone: zone, configuration: MeshDNSServerConfiguration(
            listenAddresses: addresses, port: config.dnsPort, outsideZonePolicy: policy,
            // The addresses are added to the interface during start-up; bind regardless of order.
            bindBeforeAddressExists: true, visibility: visibility), logger: logger)
    }

    /// Keeps the zone equal to the agent's view (every named member, this node included).
    public func attach(to agent: NodeAgent) {
        guard let zone else { return }
        let hostsFile = config.hostsFile, logger = self.logger
        let addresses = [identity.ipv4, identity.ipv6].compactMap(IPAddress.init)
        agent.observe { change in
            func record(_ r: (name: String, addresses: [String])) -> MeshDNSRecord {
                MeshDNSRecord(name: r.name, addresses: r.addresses.compactMap(IPAddress.init))
            }
            var rejected: [MeshDNSRejectedRecord] = []
            switch change {
            case .all(let domain, let records, let revision):
                var configuration = zone.configuration
                if configuration.origin.description.lowercased() != domain.lowercased() + ".", !domain.isEmpty {
                    guard let c = try? MeshDNSZoneConfiguration(origin: domain, nameServerAddresses: addresses) else {
                        logger.error("the tenant's mesh domain is not a DNS name; names not served", metadata: ["dns.zone": "\(domain)"])
                        return
                    }
                    configuration = c
                }
                rejected = zone.replace(records: records.map(record), revision: UInt32(truncatingIfNeeded: revision),
                                        configuration: configuration).rejected
            case .changed(let removed, let added, let revision):
                for name in removed { zone.remove(name: name, revision: UInt32(truncatingIfNeeded: revision)) }
                for r in added { rejected += zone.upsert(record(r), revision: UInt32(truncatingIfNeeded: revision)).rejected }
            }
            for r in rejected {
                logger.warning("name not served", metadata: ["dns.name": "\(r.name)", "reason": "\(r.reason)"])
            }
            if !hostsFile.isEmpty {
                do {
                    try zone.writeHostsFile(to: hostsFile)
                } catch {
                    logger.warning("cannot write the hosts file", metadata: ["path": "\(hostsFile)", "error": "\(error)"])
                }
            }
        }
    }

    /// The resolver, when enabled.
    public func services() -> [any Service] { server.map { [$0] } ?? [] }

    /// `dns_status` for the node's state.
    public func status() -> Mesh_V1_DnsStatus {
        var s = Mesh_V1_DnsStatus()
        guard let zone else { return s }
        s.zone = String(zone.configuration.origin.description.dropLast())
        if let server {
            let st = server.status()
            s.serving = st.serving
            s.recordCount = UInt32(st.recordCount)
            s.lastUpdateMs = st.lastUpdate.map { Int64($0.timeIntervalSince1970 * 1000) } ?? 0
            s.listen = st.listenAddresses
        } else {
            let snap = zone.snapshot()
            s.recordCount = UInt32(snap.recordCount)
            s.lastUpdateMs = snap.lastUpdate.map { Int64($0.timeIntervalSince1970 * 1000) } ?? 0
        }
        return s
    }
}
