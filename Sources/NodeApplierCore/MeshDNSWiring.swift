import Foundation
import Logging
import MeshDNS
import MeshNet
import MeshProto
import ServiceLifecycle

/// Mesh DNS on the node, the way MagicDNS serves names from the node itself: a resolver on the
/// node's mesh addresses answers `<slug>.<domain>` from the agent's peer list (no lookup per
/// query). The zone is replaced after every change the agent applies, so a deleted or renamed
/// device stops resolving as soon as the node has applied the change. Names outside the zone are
/// forwarded to the host's resolvers (or refused), because device configs point their `DNS =` at
/// the nodes.
public final class MeshDNSWiring: Sendable {
    let config: NodeConfiguration
    let identity: NodeIdentity
    let logger: Logger
    let zone: MeshDNSZone?
    let server: MeshDNSServer?

    public init(config: NodeConfiguration, identity: NodeIdentity, logger: Logger) {
        self.config = config
        self.identity = identity
        self.logger = logger
        let addresses = [identity.ipv4, identity.ipv6].compactMap(IPAddress.init)
        guard let zoneConfig = try? MeshDNSZoneConfiguration(origin: config.meshDomain, nameServerAddresses: addresses) else {
            logger.error("mesh DNS disabled: bad zone name", metadata: ["zone": "\(config.meshDomain)"])
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
        let policy: MeshDNSOutsideZonePolicy = config.dnsOutsideZone == "refuse"
            ? .refuse : .forward(to: MeshDNSOutsideZonePolicy.systemResolvers(excluding: addresses))
        server = MeshDNSServer(zone: zone, configuration: MeshDNSServerConfiguration(
            listenAddresses: addresses, port: config.dnsPort, outsideZonePolicy: policy,
            // The addresses are added to the interface during start-up; bind regardless of order.
            bindBeforeAddressExists: true), logger: logger)
    }

    /// Keeps the zone equal to the agent's peer list (plus this node).
    public func attach(to agent: NodeAgent) {
        guard let zone else { return }
        let hostsFile = config.hostsFile, domain = "." + config.meshDomain, logger = self.logger
        agent.observe { snapshot in
            var records: [MeshDNSRecord] = []
            for p in snapshot.peers where p.dnsName.hasSuffix(domain) {
                let addresses = p.meshIps.compactMap(IPAddress.init)
                if !addresses.isEmpty { records.append(MeshDNSRecord(name: p.dnsName, addresses: addresses)) }
            }
            let update = zone.replace(records: records, revision: UInt32(truncatingIfNeeded: snapshot.revision))
            for r in update.rejected {
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
        s.zone = config.meshDomain
        guard let zone else { return s }
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
