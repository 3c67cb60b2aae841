import Foundation
import Logging
import MeshProto
import ServiceLifecycle

/// Mesh DNS for the node: serves `<slug>.<domain>` from the agent's peer list. (The resolver is
/// wired in once the DNS library lands; until then the status says it is not serving.)
struct MeshDNSWiring: Sendable {
    let config: NodeConfiguration
    let identity: NodeIdentity
    let logger: Logger

    func attach(to agent: NodeAgent) {}

    func services() -> [any Service] { [] }

    func status() -> Mesh_V1_DnsStatus {
        var s = Mesh_V1_DnsStatus()
        s.serving = false
        s.zone = config.meshDomain
        return s
    }
}
