import Foundation
import MeshNet

/// Which WireGuard implementation drives the interface.
public enum BackendChoice: String, Sendable, CaseIterable {
    /// Kernel if the module is there, else userspace.
    case auto
    case kernel
    case userspace
}

/// Who runs wireguard-go for the userspace backend.
public enum UserspaceDaemon: String, Sendable, CaseIterable {
    /// NodeApplier starts it (detached, so the interface outlives NodeApplier) when no UAPI socket answers.
    case managed
    /// A supervisor runs it (`wireguard-go -f`); NodeApplier waits for its UAPI socket and never starts one.
    case external
}

/// NodeApplier's settings.
public struct NodeConfiguration: Sendable {
    /// The node's name; its DNS name becomes `<slug>.<tenant domain>`.
    public var name: String
    /// Where the private key (`private.key`, mode 0600) and the registration (`node.json`) live.
    public var stateDirectory: String
    /// The WireGuard interface.
    public var interface: String
    public var listenPort: UInt16
    /// `host:port` other peers dial; defaults to the first non-loopback address and the listen port.
    public var endpoint: String
    public var backend: BackendChoice
    /// wireguard-go, for the userspace backend.
    public var wireguardGo: String
    /// wireguard-go's `LOG_LEVEL` when the node starts it (verbose, error or silent).
    public var wireguardGoLogLevel: String
    /// Whether NodeApplier starts wireguard-go itself or a supervisor does.
    public var userspaceDaemon: UserspaceDaemon
    /// How often the interface is checked; a node whose interface is gone, or was replaced by an
    /// unconfigured one, stops with an error so that its supervisor starts it again.
    public var interfaceCheckInterval: Duration
    public var mtu: UInt32
    /// Full resync by diff, whatever happened.
    public var resyncInterval: Duration
    /// Cheap check of the tenant's newest revision, to catch a lost last message.
    public var revisionCheckInterval: Duration
    /// How often the device is read for handshake reports.
    public var handshakePollInterval: Duration
    /// Turn on IPv4/IPv6 forwarding on the interface (the hub routes device-to-device traffic).
    public var forwarding: Bool
    /// DNS port on the mesh addresses; 0 disables the resolver.
    public var dnsPort: UInt16
    /// Names outside the zone: forward to the host's resolver (`forward`) or refuse (`refuse`).
    public var dnsOutsideZone: String
    /// Also write the zone as a hosts-format file here (empty: don't).
    public var hostsFile: String
    /// The HTTPS front on the mesh addresses (docs/fallback.md); 0 disables it.
    public var httpsPort: UInt16
    /// Where the HTTPS front relays to: the gateway beside the node (`host:port`, plain HTTP).
    public var httpsUpstream: String
    /// Enforce the tenant's access policy with nftables (false: the policy is tracked but not enforced
    /// on this node; docs/policies.md).
    public var policyFilter: Bool
    /// The nft and conntrack tools (Debian's nftables and conntrack packages).
    public var nft: String
    public var conntrack: String

    public init(name: String, stateDirectory: String, interface: String = "wg-quazzar0", listenPort: UInt16 = 51820,
                endpoint: String = "", backend: BackendChoice = .auto, wireguardGo: String = "wireguard-go",
                wireguardGoLogLevel: String = "error", userspaceDaemon: UserspaceDaemon = .managed, interfaceCheckInterval: Duration = .seconds(2),
                mtu: UInt32 = 1420,
                resyncInterval: Duration = .seconds(300), revisionCheckInterval: Duration = .seconds(30),
                handshakePollInterval: Duration = .seconds(1), forwarding: Bool = true,
                dnsPort: UInt16 = 53, dnsOutsideZone: String = "forward", hostsFile: String = "",
                httpsPort: UInt16 = 0, httpsUpstream: String = "127.0.0.1:8080",
                policyFilter: Bool = true, nft: String = "nft", conntrack: String = "conntrack") {
        self.httpsPort = httpsPort
        self.httpsUpstream = httpsUpstream
        self.policyFilter = policyFilter
        self.nft = nft
        self.conntrack = conntrack
        self.name = name
        self.stateDirectory = stateDirectory
        self.interface = interface
        self.listenPort = listenPort
        self.endpoint = endpoint
        self.backend = backend
        self.wireguardGo = wireguardGo
        self.wireguardGoLogLevel = wireguardGoLogLevel
        self.userspaceDaemon = userspaceDaemon
        self.interfaceCheckInterval = interfaceCheckInterval
        self.mtu = mtu
        self.resyncInterval = resyncInterval
        self.revisionCheckInterval = revisionCheckInterval
        self.handshakePollInterval = handshakePollInterval
        self.forwarding = forwarding
        self.dnsPort = dnsPort
        self.dnsOutsideZone = dnsOutsideZone
        self.hostsFile = hostsFile
    }
}
