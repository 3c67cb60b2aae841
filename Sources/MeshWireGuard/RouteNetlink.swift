#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CMNL
import Logging
import MeshNet

/// A network interface as rtnetlink reports it.
public struct NetworkLink: Sendable, Hashable {
    /// The interface index.
    public var index: Int32
    /// The interface name.
    public var name: String
    /// The link kind (`wireguard`, `tun`, `veth`...), nil for plain devices.
    public var kind: String?
    /// The MTU in bytes.
    public var mtu: UInt32
    /// True when the interface is administratively up (IFF_UP).
    public var isUp: Bool

    /// Creates a link description.
    public init(index: Int32, name: String, kind: String?, mtu: UInt32, isUp: Bool) {
        self.index = index
        self.name = name
        self.kind = kind
        self.mtu = mtu
        self.isUp = isUp
    }
}

/// Link and address management over rtnetlink, so the node applier needs no `ip` binary: create a
/// WireGuard link, set its addresses and MTU, bring it up or down, delete it, look it up.
///
/// With the userspace backend the daemon creates its TUN device itself; addresses, MTU and state
/// still go through here. I/O runs on the actor's private queue.
public actor RouteNetlink {
    /// The network namespace the socket lives in (nil: the caller's).
    public nonisolated let namespacePath: String?
    private let logger: Logger
    private let executor = BlockingExecutor(label: "mesh.wireguard.rtnetlink")
    private var socket: NetlinkSocket?

    /// The actor runs on its own queue; see the type's documentation.
    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    /// Creates a handle; the socket opens on first use.
    public init(namespacePath: String? = nil, logger: Logger) {
        self.namespacePath = namespacePath
        self.logger = logger
    }

    private func openSocket() throws(WireGuardError) -> NetlinkSocket {
        if let socket { return socket }
        let s = try NetlinkSocket(bus: NETLINK_ROUTE, namespacePath: namespacePath)
        socket = s
        return s
    }

    // MARK: Links

    /// Every link in the namespace.
    public func links() throws(WireGuardError) -> [NetworkLink] {
        let buffer = NetlinkMessageBuffer(capacity: 256)
        let nlh = buffer.start(type: UInt16(RTM_GETLINK), flags: UInt16(NLM_F_REQUEST | NLM_F_DUMP))
        _ = mnl_nlmsg_put_extra_header(nlh, MemoryLayout<ifinfomsg>.size)
        var request = buffer.bytes(nlh)
        var out: [NetworkLink] = []
        try openSocket().request(&request, operation: "list links") { reply throws(WireGuardError) in
            out.append(try Self.parseLink(reply))
        }
        return out
    }

    /// One link by name; throws ``WireGuardError/deviceNotFound(_:)`` if there is none.
    public func link(named name: String) throws(WireGuardError) -> NetworkLink {
        let buffer = NetlinkMessageBuffer(capacity: 256)
        let nlh = buffer.start(type: UInt16(RTM_GETLINK), flags: UInt16(NLM_F_REQUEST | NLM_F_ACK))
        _ = mnl_nlmsg_put_extra_header(nlh, MemoryLayout<ifinfomsg>.size)
        mnl_attr_put_strz(nlh, UInt16(IFLA_IFNAME), name)
        var request = buffer.bytes(nlh)
        var found: NetworkLink?
        try openSocket().request(&request, operation: "get link \(name)", device: name) { reply throws(WireGuardError) in
            found = try Self.parseLink(reply)
        }
        guard let found else { throw .deviceNotFound(name) }
        return found
    }

    /// The interface index of a link.
    public func index(of name: String) throws(WireGuardError) -> Int32 {
        try link(named: name).index
    }

    /// Creates a link of `kind` (default `wireguard`), down, optionally with an MTU.
    /// Throws ``WireGuardError/alreadyExists(_:)`` if the name is taken.
    public func createLink(named name: String, kind: String = "wireguard", mtu: UInt32? = nil) throws(WireGuardError) {
        guard name.utf8.count < Int(IFNAMSIZ) else { throw .invalidConfiguration("interface name too long: \(name)") }
        let buffer = NetlinkMessageBuffer(capacity: 512)
        let nlh = buffer.start(type: UInt16(RTM_NEWLINK), flags: UInt16(NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL))
        _ = mnl_nlmsg_put_extra_header(nlh, MemoryLayout<ifinfomsg>.size)
        mnl_attr_put_strz(nlh, UInt16(IFLA_IFNAME), name)
        if let mtu { mnl_attr_put_u32(nlh, UInt16(IFLA_MTU), mtu) }
        let info = mnl_attr_nest_start(nlh, UInt16(IFLA_LINKINFO))
        mnl_attr_put_str(nlh, UInt16(IFLA_INFO_KIND), kind)
        mnl_attr_nest_end(nlh, info)
        var request = buffer.bytes(nlh)
        // No device name is passed for the mapping: EOPNOTSUPP here means the kernel has no driver for
        // the kind (no wireguard module) and must stay .netlink, not become .deviceNotFound.
        do {
            try openSocket().request(&request, operation: "create link \(name) (\(kind))")
        } catch {
            if case .alreadyExists = error { throw .alreadyExists(name) }
            throw error
        }
        logger.debug("created link", metadata: ["link": "\(name)", "kind": "\(kind)"])
    }

    /// Deletes a link.
    public func deleteLink(named name: String) throws(WireGuardError) {
        let index = try index(of: name)
        var request = linkChange(index: index) { _ in }
        request.withUnsafeMutableBytes { raw in
            raw.baseAddress!.assumingMemoryBound(to: nlmsghdr.self).pointee.nlmsg_type = UInt16(RTM_DELLINK)
        }
        try openSocket().request(&request, operation: "delete link \(name)", device: name)
    }

    /// Sets the MTU.
    public func setMTU(_ mtu: UInt32, link name: String) throws(WireGuardError) {
        let index = try index(of: name)
        var request = linkChange(index: index) { nlh in mnl_attr_put_u32(nlh, UInt16(IFLA_MTU), mtu) }
        try openSocket().request(&request, operation: "set mtu \(mtu) on \(name)", device: name)
    }

    /// Brings the link up or down (IFF_UP).
    public func setUp(_ up: Bool, link name: String) throws(WireGuardError) {
        let index = try index(of: name)
        var request = linkChange(index: index, flags: up ? UInt32(IFF_UP) : 0, change: UInt32(IFF_UP)) { _ in }
        try openSocket().request(&request, operation: "set \(name) \(up ? "up" : "down")", device: name)
    }

    private func linkChange(index: Int32, flags: UInt32 = 0, change: UInt32 = 0,
                            _ attrs: (UnsafeMutablePointer<nlmsghdr>) -> Void) -> [UInt8] {
        let buffer = NetlinkMessageBuffer(capacity: 256)
        let nlh = buffer.start(type: UInt16(RTM_NEWLINK), flags: UInt16(NLM_F_REQUEST | NLM_F_ACK))
        let ifi = mnl_nlmsg_put_extra_header(nlh, MemoryLayout<ifinfomsg>.size)!.assumingMemoryBound(to: ifinfomsg.self)
        ifi.pointee.ifi_family = UInt8(AF_UNSPEC)
        ifi.pointee.ifi_index = index
        ifi.pointee.ifi_flags = flags
        ifi.pointee.ifi_change = change
        attrs(nlh)
        return buffer.bytes(nlh)
    }

    static func parseLink(_ nlh: UnsafePointer<nlmsghdr>) throws(WireGuardError) -> NetworkLink {
        guard mnl_nlmsg_get_payload_len(nlh) >= MemoryLayout<ifinfomsg>.size else { throw .malformedReply("short RTM_NEWLINK") }
        let ifi = mnl_nlmsg_get_payload(nlh)!.loadUnaligned(as: ifinfomsg.self)
        var link = NetworkLink(index: ifi.ifi_index, name: "", kind: nil, mtu: 0, isUp: ifi.ifi_flags & UInt32(IFF_UP) != 0)
        try NetlinkAttributes.forEach(in: nlh, offset: MemoryLayout<ifinfomsg>.size) { a throws(WireGuardError) in
            switch Int(mnl_attr_get_type(a)) {
            case Int(IFLA_IFNAME): link.name = NetlinkAttributes.string(a)
            case Int(IFLA_MTU): link.mtu = try NetlinkAttributes.u32(a, "mtu")
            case Int(IFLA_LINKINFO):
                try NetlinkAttributes.forEachNested(in: a) { info throws(WireGuardError) in
                    if UInt32(mnl_attr_get_type(info)) == IFLA_INFO_KIND { link.kind = NetlinkAttributes.string(info) }
                }
            default: break
            }
        }
        return link
    }

    // MARK: Addresses

    /// Adds an address with its prefix length (`100.64.0.7/10`, `fd00::7/64`); an existing identical
    /// address is replaced, so applying the same address twice succeeds.
    public func addAddress(_ prefix: IPPrefix, link name: String) throws(WireGuardError) {
        var request = try addressMessage(RTM_NEWADDR, prefix, link: name, flags: UInt16(NLM_F_CREATE | NLM_F_REPLACE))
        try openSocket().request(&request, operation: "add address \(prefix) to \(name)", device: name)
    }

    /// Removes an address.
    public func removeAddress(_ prefix: IPPrefix, link name: String) throws(WireGuardError) {
        var request = try addressMessage(RTM_DELADDR, prefix, link: name, flags: 0)
        try openSocket().request(&request, operation: "remove address \(prefix) from \(name)", device: name)
    }

    /// The addresses on a link, with prefix lengths (IPv6 link-local ones included).
    public func addresses(link name: String) throws(WireGuardError) -> [IPPrefix] {
        let index = try index(of: name)
        let buffer = NetlinkMessageBuffer(capacity: 256)
        let nlh = buffer.start(type: UInt16(RTM_GETADDR), flags: UInt16(NLM_F_REQUEST | NLM_F_DUMP))
        _ = mnl_nlmsg_put_extra_header(nlh, MemoryLayout<ifaddrmsg>.size)
        var request = buffer.bytes(nlh)
        var out: [IPPrefix] = []
        try openSocket().request(&request, operation: "list addresses of \(name)") { reply throws(WireGuardError) in
            guard mnl_nlmsg_get_payload_len(reply) >= MemoryLayout<ifaddrmsg>.size else { throw .malformedReply("short RTM_NEWADDR") }
            let ifa = mnl_nlmsg_get_payload(reply)!.loadUnaligned(as: ifaddrmsg.self)
            guard Int32(bitPattern: ifa.ifa_index) == index else { return }
            var local: IPAddress?, address: IPAddress?
            try NetlinkAttributes.forEach(in: reply, offset: MemoryLayout<ifaddrmsg>.size) { a throws(WireGuardError) in
                let type = Int(mnl_attr_get_type(a))
                guard type == Int(IFA_LOCAL) || type == Int(IFA_ADDRESS) else { return }
                let p = NetlinkAttributes.payload(a)
                let ip: IPAddress? = p.count == 4 ? .v4(IPv4Address(p[0], p[1], p[2], p[3]))
                    : p.count == 16 ? IPv6Address(bytes: p).map { .v6($0) } : nil
                if type == Int(IFA_LOCAL) { local = ip } else { address = ip }
            }
            // On point-to-point links IFA_ADDRESS is the peer; IFA_LOCAL is ours when present.
            if let ip = local ?? address, let prefix = IPPrefix(ip, length: ifa.ifa_prefixlen) { out.append(prefix) }
        }
        return out
    }

    private func addressMessage(_ type: Int, _ prefix: IPPrefix, link name: String, flags: UInt16) throws(WireGuardError) -> [UInt8] {
        let index = try index(of: name)
        let buffer = NetlinkMessageBuffer(capacity: 256)
        let nlh = buffer.start(type: UInt16(type), flags: UInt16(NLM_F_REQUEST | NLM_F_ACK) | flags)
        let ifa = mnl_nlmsg_put_extra_header(nlh, MemoryLayout<ifaddrmsg>.size)!.assumingMemoryBound(to: ifaddrmsg.self)
        let bytes = prefix.address.bytes
        ifa.pointee.ifa_family = UInt8(bytes.count == 4 ? AF_INET : AF_INET6)
        ifa.pointee.ifa_prefixlen = prefix.length
        ifa.pointee.ifa_index = UInt32(bitPattern: index)
        ifa.pointee.ifa_scope = UInt8(RT_SCOPE_UNIVERSE.rawValue)
        // Duplicate address detection is meaningless on a layer-3 tunnel and would delay the address.
        if bytes.count == 16 { ifa.pointee.ifa_flags = UInt8(IFA_F_NODAD) }
        bytes.withUnsafeBytes { raw in
            mnl_attr_put(nlh, UInt16(IFA_LOCAL), raw.count, raw.baseAddress)
            mnl_attr_put(nlh, UInt16(IFA_ADDRESS), raw.count, raw.baseAddress)
        }
        return buffer.bytes(nlh)
    }
}
