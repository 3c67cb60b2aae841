import ArgumentParser
import Foundation
import MeshDomain
import MeshNet
import NodeApplierCore
import ServiceKit

/// NodeApplier: keeps one node's `wg-quazzar0` in step with the control plane.
@main
struct NodeApplier: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "NodeApplier",
        abstract: "Registers this node, brings up its WireGuard interface, and applies every peer change without restarting anything.",
        discussion: """
            Every option also reads the environment variable named in its help.

            \(Env.secretsHelp(BusOptions.secrets + [NodeApplier.enrollmentToken]))
            """)

    /// The one-time token that lets the node register into its tenant (`meshctl node enroll`).
    static let enrollmentToken = SecretSetting("MESH_NODE_ENROLLMENT_TOKEN",
                                               "The enrollment token (`meshctl node enroll`); needed until the node has registered once.")

    @OptionGroup var common: CommonOptions

    @Option(help: "Node name; empty: the host name (env MESH_NODE_NAME).")
    var name: String = Env.string("MESH_NODE_NAME", "")

    @Option(help: "State directory for the key and registration (env MESH_NODE_STATE_DIR).")
    var stateDir: String = Env.string("MESH_NODE_STATE_DIR", "/var/lib/quazzar-mesh")

    @Option(help: "WireGuard interface (env MESH_WG_INTERFACE).")
    var interface: String = Env.string("MESH_WG_INTERFACE", "wg-quazzar0")

    @Option(help: "WireGuard listen port (env MESH_WG_LISTEN_PORT).")
    var listenPort: Int = Env.int("MESH_WG_LISTEN_PORT", 51820)

    @Option(help: "host:port other peers dial (env MESH_NODE_ENDPOINT).")
    var endpoint: String = Env.string("MESH_NODE_ENDPOINT", "")

    @Option(help: "auto, kernel or userspace (env MESH_WG_BACKEND).")
    var backend: String = Env.string("MESH_WG_BACKEND", "auto")

    @Option(help: "wireguard-go binary for the userspace backend (env MESH_WIREGUARD_GO).")
    var wireguardGo: String = Env.string("MESH_WIREGUARD_GO", "wireguard-go")

    @Option(help: "Who runs wireguard-go: managed (NodeApplier starts it) or external (a supervisor does) (env MESH_WG_USERSPACE_DAEMON).")
    var userspaceDaemon: String = Env.string("MESH_WG_USERSPACE_DAEMON", "managed")

    @Option(help: "Seconds between interface checks; an interface that two handshake polls in a row could not read, or found without the node's key, stops the node with an error (env MESH_NODE_INTERFACE_CHECK_SECONDS).")
    var interfaceCheckSeconds: Double = Env.seconds("MESH_NODE_INTERFACE_CHECK_SECONDS", 2)

    @Option(help: "wireguard-go's LOG_LEVEL when the node starts it: verbose, error or silent (env MESH_WIREGUARD_GO_LOG_LEVEL).")
    var wireguardGoLogLevel: String = Env.string("MESH_WIREGUARD_GO_LOG_LEVEL", "error")

    @Option(help: "Interface MTU (env MESH_WG_MTU).")
    var mtu: Int = Env.int("MESH_WG_MTU", 1420)

    @Option(help: "Seconds between full resyncs (env MESH_NODE_RESYNC_SECONDS).")
    var resyncSeconds: Double = Env.seconds("MESH_NODE_RESYNC_SECONDS", 300)

    @Option(help: "Seconds between revision checks (env MESH_NODE_REVISION_CHECK_SECONDS).")
    var revisionCheckSeconds: Double = Env.seconds("MESH_NODE_REVISION_CHECK_SECONDS", 30)

    @Option(help: "Seconds between handshake polls at least; a poll reads the whole interface, so a node waits four times as long as its last poll took if that is longer (env MESH_NODE_HANDSHAKE_POLL_SECONDS).")
    var handshakePollSeconds: Double = Env.seconds("MESH_NODE_HANDSHAKE_POLL_SECONDS", 1)

    @Option(help: "Enable forwarding on the interface: true or false (env MESH_NODE_FORWARDING).")
    var forwarding: Bool = Env.bool("MESH_NODE_FORWARDING", true)

    @Option(help: "Mesh DNS port on the mesh addresses; 0 disables (env MESH_DNS_PORT).")
    var dnsPort: Int = Env.int("MESH_DNS_PORT", 53)

    @Option(help: "Names outside the zone: forward or refuse (env MESH_DNS_OUTSIDE_ZONE).")
    var dnsOutsideZone: String = Env.string("MESH_DNS_OUTSIDE_ZONE", "forward")

    @Option(help: "Also write the zone to this hosts-format file (env MESH_DNS_HOSTS_FILE).")
    var hostsFile: String = Env.string("MESH_DNS_HOSTS_FILE", "")

    @Option(help: "HTTPS front on the mesh addresses for the phone fallback; 0 disables (env MESH_NODE_HTTPS_PORT).")
    var httpsPort: Int = Env.int("MESH_NODE_HTTPS_PORT", 8443)

    @Option(help: "The gateway beside the node that the HTTPS front relays to, host:port (env MESH_NODE_HTTPS_UPSTREAM).")
    var httpsUpstream: String = Env.string("MESH_NODE_HTTPS_UPSTREAM", "127.0.0.1:8080")

    @Option(help: "Enforce the tenant's access policy: nftables or off (env MESH_POLICY_FILTER).")
    var policyFilter: String = Env.string("MESH_POLICY_FILTER", "nftables")

    @Option(help: "The nft tool (env MESH_NFT).")
    var nft: String = Env.string("MESH_NFT", "nft")

    @Option(help: "The conntrack tool (env MESH_CONNTRACK).")
    var conntrack: String = Env.string("MESH_CONNTRACK", "conntrack")

    func validate() throws {
        guard (0...65535).contains(httpsPort) else { throw ValidationError("--https-port must be 0 to 65535") }
        guard HostPort(httpsUpstream) != nil else { throw ValidationError("--https-upstream must be host:port") }
        guard !interface.isEmpty, interface.utf8.count <= 15 else { throw ValidationError("--interface must be 1 to 15 characters") }
        guard (1...65535).contains(listenPort) else { throw ValidationError("--listen-port must be 1 to 65535") }
        guard BackendChoice(rawValue: backend) != nil else { throw ValidationError("--backend must be auto, kernel or userspace") }
        guard UserspaceDaemon(rawValue: userspaceDaemon) != nil else { throw ValidationError("--userspace-daemon must be managed or external") }
        guard interfaceCheckSeconds > 0 else { throw ValidationError("--interface-check-seconds must be positive") }
        guard (1280...9000).contains(mtu) else { throw ValidationError("--mtu must be 1280 to 9000") }
        guard (0...65535).contains(dnsPort) else { throw ValidationError("--dns-port must be 0 to 65535") }
        guard ["forward", "refuse"].contains(dnsOutsideZone) else { throw ValidationError("--dns-outside-zone must be forward or refuse") }
        guard ["verbose", "error", "silent"].contains(wireguardGoLogLevel) else {
            throw ValidationError("--wireguard-go-log-level must be verbose, error or silent")
        }
        guard resyncSeconds > 0, revisionCheckSeconds > 0, handshakePollSeconds > 0 else {
            throw ValidationError("--resync-seconds, --revision-check-seconds and --handshake-poll-seconds must be positive")
        }
        guard ["nftables", "off"].contains(policyFilter) else { throw ValidationError("--policy-filter must be nftables or off") }
    }

    func run() async throws {
        HeapRelease.limitArenas()
        var ep = endpoint
        if ep.isEmpty { ep = "\(Self.firstAddress() ?? "127.0.0.1"):\(listenPort)" }
        let config = NodeConfiguration(
            name: name.isEmpty ? ProcessInfo.processInfo.hostName : name, stateDirectory: stateDir, interface: interface,
            listenPort: UInt16(listenPort), endpoint: ep, backend: BackendChoice(rawValue: backend)!, wireguardGo: wireguardGo,
            wireguardGoLogLevel: wireguardGoLogLevel, userspaceDaemon: UserspaceDaemon(rawValue: userspaceDaemon)!,
            interfaceCheckInterval: .milliseconds(Int(interfaceCheckSeconds * 1000)), mtu: UInt32(mtu),
            resyncInterval: .milliseconds(Int(resyncSeconds * 1000)), revisionCheckInterval: .milliseconds(Int(revisionCheckSeconds * 1000)),
            handshakePollInterval: .milliseconds(Int(handshakePollSeconds * 1000)), forwarding: forwarding,
            dnsPort: UInt16(dnsPort), dnsOutsideZone: dnsOutsideZone, hostsFile: hostsFile,
            httpsPort: UInt16(httpsPort), httpsUpstream: httpsUpstream,
            policyFilter: policyFilter == "nftables", nft: nft, conntrack: conntrack)
        try await NodeRuntime.run(config, common: common, enrollmentToken: try Env.secret(Self.enrollmentToken.name))
    }

    /// The first non-loopback IPv4 address of this host (network namespace), for the default endpoint.
    static func firstAddress() -> String? {
        var ifap: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&ifap) == 0, let first = ifap else { return nil }
        defer { freeifaddrs(ifap) }
        var p: UnsafeMutablePointer<ifaddrs>? = first
        while let i = p {
            if let sa = i.pointee.ifa_addr, sa.pointee.sa_family == UInt16(AF_INET), (Int32(i.pointee.ifa_flags) & Int32(IFF_LOOPBACK)) == 0 {
                var buf = [CChar](repeating: 0, count: Int(NI_MAXHOST))
                if getnameinfo(sa, socklen_t(MemoryLayout<sockaddr_in>.size), &buf, socklen_t(buf.count), nil, 0, NI_NUMERICHOST) == 0 {
                    return String(decoding: buf.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
                }
            }
            p = i.pointee.ifa_next
        }
        return nil
    }
}
