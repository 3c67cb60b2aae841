#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CMNL
import MeshNet

/// Building and parsing the messages of the "wireguard" generic netlink family (<linux/wireguard.h>).
enum WireGuardNetlink {
    /// Default largest SET message. The kernel takes far larger requests; 32 KiB keeps each one well
    /// inside the default socket send buffer while needing only ~35 messages for 10,000 peers.
    static let defaultMaxMessageSize = 32 * 1024

    // MARK: SET_DEVICE, split into messages

    /// Encodes `config` as one or more WG_CMD_SET_DEVICE messages, none larger than `maxMessageSize`.
    ///
    /// The first message carries the device attributes and WGDEVICE_F_REPLACE_PEERS; later ones carry
    /// only the interface name and more peers, so the peer list is cleared once. A peer whose allowed
    /// IPs do not fit continues in the next message with only its public key, its update-only flag
    /// and the remaining prefixes: WGPEER_F_REPLACE_ALLOWEDIPS is not repeated, or the continuation
    /// would wipe the prefixes the previous message just added.
    static func setDeviceMessages(family: UInt16, device: String, config: WireGuardConfig,
                                  maxMessageSize: Int = defaultMaxMessageSize) throws(WireGuardError) -> [[UInt8]] {
        guard device.utf8.count < Int(IFNAMSIZ) else { throw .invalidConfiguration("interface name too long: \(device)") }
        let buffer = NetlinkMessageBuffer(capacity: maxMessageSize)
        let cap = maxMessageSize
        var messages: [[UInt8]] = []
        var nlh = startSet(buffer, family: family, device: device, config: config, first: true)
        // Device attributes must fit the first message on their own.
        guard nlh.pointee.nlmsg_len <= cap else { throw .invalidConfiguration("max message size \(cap) too small") }
        var peersNest: UnsafeMutablePointer<nlattr>?
        var progress = 0  // committed units in the current message: peer headers and prefixes
        var peerIndex = 0, ipIndex = 0
        var continuing = false

        func flush() throws(WireGuardError) {
            if let nest = peersNest {
                if progress > 0 { mnl_attr_nest_end(nlh, nest) } else { mnl_attr_nest_cancel(nlh, nest) }
                peersNest = nil
            }
            guard progress > 0 else {
                throw .invalidConfiguration("max message size \(cap) cannot hold one peer")
            }
            messages.append(buffer.bytes(nlh))
            nlh = startSet(buffer, family: family, device: device, config: config, first: false)
            progress = 0
        }

        while peerIndex < config.peers.count {
            let peer = config.peers[peerIndex]
            if peersNest == nil {
                guard let nest = mnl_attr_nest_start_check(nlh, cap, UInt16(WGDEVICE_A_PEERS.rawValue)) else {
                    try flush()
                    continue
                }
                peersNest = nest
            }
            guard let peerNest = mnl_attr_nest_start_check(nlh, cap, 0) else {
                try flush()
                continue
            }
            var flags: UInt32 = 0
            if peer.remove { flags |= WGPEER_F_REMOVE_ME.rawValue }
            if peer.updateOnly && !peer.remove { flags |= WGPEER_F_UPDATE_ONLY.rawValue }
            if peer.replaceAllowedIPs && !peer.remove && !continuing { flags |= WGPEER_F_REPLACE_ALLOWEDIPS.rawValue }
            var ok = peer.publicKey.withBytes { mnl_attr_put_check(nlh, cap, UInt16(WGPEER_A_PUBLIC_KEY.rawValue), 32, $0.baseAddress) }
            ok = ok && (flags == 0 || mnl_attr_put_u32_check(nlh, cap, UInt16(WGPEER_A_FLAGS.rawValue), flags))
            if !continuing && !peer.remove {
                if ok, let psk = peer.presharedKey {
                    ok = psk.withBytes { mnl_attr_put_check(nlh, cap, UInt16(WGPEER_A_PRESHARED_KEY.rawValue), 32, $0.baseAddress) }
                }
                if ok, let endpoint = peer.endpoint {
                    ok = putEndpoint(nlh, cap, endpoint)
                }
                if ok, let keepalive = peer.persistentKeepaliveInterval {
                    ok = mnl_attr_put_u16_check(nlh, cap, UInt16(WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL.rawValue), keepalive)
                }
            }
            guard ok else {
                mnl_attr_nest_cancel(nlh, peerNest)
                try flush()
                continue
            }
            if !continuing { progress += 1 }
            let prefixes = peer.remove ? [] : peer.allowedIPs
            if ipIndex < prefixes.count {
                if let ipsNest = mnl_attr_nest_start_check(nlh, cap, UInt16(WGPEER_A_ALLOWEDIPS.rawValue)) {
                    let before = ipIndex
                    while ipIndex < prefixes.count {
                        guard putAllowedIP(nlh, cap, prefixes[ipIndex]) else { break }
                        ipIndex += 1
                        progress += 1
                    }
                    if ipIndex > before { mnl_attr_nest_end(nlh, ipsNest) } else { mnl_attr_nest_cancel(nlh, ipsNest) }
                }
                if ipIndex < prefixes.count {
                    // The rest of this peer's prefixes go in the next message.
                    if progress == 0 {
                        mnl_attr_nest_cancel(nlh, peerNest)
                    } else {
                        mnl_attr_nest_end(nlh, peerNest)
                    }
                    try flush()
                    continuing = true
                    continue
                }
            }
            mnl_attr_nest_end(nlh, peerNest)
            peerIndex += 1
            ipIndex = 0
            continuing = false
        }
        if let nest = peersNest {
            mnl_attr_nest_end(nlh, nest)
            peersNest = nil
        }
        if progress > 0 || messages.isEmpty { messages.append(buffer.bytes(nlh)) }
        return messages
    }

    private static func startSet(_ buffer: NetlinkMessageBuffer, family: UInt16, device: String,
                                 config: WireGuardConfig, first: Bool) -> UnsafeMutablePointer<nlmsghdr> {
        let nlh = buffer.startGeneric(family: family, command: UInt8(WG_CMD_SET_DEVICE.rawValue), version: UInt8(WG_GENL_VERSION),
                                      flags: UInt16(NLM_F_REQUEST | NLM_F_ACK))
        mnl_attr_put_strz(nlh, UInt16(WGDEVICE_A_IFNAME.rawValue), device)
        guard first else { return nlh }
        if config.replacePeers { mnl_attr_put_u32(nlh, UInt16(WGDEVICE_A_FLAGS.rawValue), WGDEVICE_F_REPLACE_PEERS.rawValue) }
        if let k = config.privateKey {
            k.withBytes { mnl_attr_put(nlh, UInt16(WGDEVICE_A_PRIVATE_KEY.rawValue), 32, $0.baseAddress) }
        }
        if let p = config.listenPort { mnl_attr_put_u16(nlh, UInt16(WGDEVICE_A_LISTEN_PORT.rawValue), p) }
        if let m = config.firewallMark { mnl_attr_put_u32(nlh, UInt16(WGDEVICE_A_FWMARK.rawValue), m) }
        return nlh
    }

    private static func putEndpoint(_ nlh: UnsafeMutablePointer<nlmsghdr>, _ cap: Int, _ endpoint: HostPort) -> Bool {
        switch endpoint.address {
        case .v4(let a):
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = endpoint.port.bigEndian
            sin.sin_addr.s_addr = a.value.bigEndian
            return withUnsafeBytes(of: &sin) { mnl_attr_put_check(nlh, cap, UInt16(WGPEER_A_ENDPOINT.rawValue), $0.count, $0.baseAddress) }
        case .v6(let a):
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = endpoint.port.bigEndian
            withUnsafeMutableBytes(of: &sin6.sin6_addr) { raw in
                for (i, b) in a.bytes.enumerated() { raw[i] = b }
            }
            return withUnsafeBytes(of: &sin6) { mnl_attr_put_check(nlh, cap, UInt16(WGPEER_A_ENDPOINT.rawValue), $0.count, $0.baseAddress) }
        case nil:
            return false  // validate() rejects names before we get here
        }
    }

    /// Appends one allowed-IP nest, or nothing (returning false) if it does not fit whole.
    private static func putAllowedIP(_ nlh: UnsafeMutablePointer<nlmsghdr>, _ cap: Int, _ prefix: IPPrefix) -> Bool {
        guard let nest = mnl_attr_nest_start_check(nlh, cap, 0) else { return false }
        let bytes = prefix.address.bytes
        let family: UInt16 = bytes.count == 4 ? UInt16(AF_INET) : UInt16(AF_INET6)
        let ok = mnl_attr_put_u16_check(nlh, cap, UInt16(WGALLOWEDIP_A_FAMILY.rawValue), family)
            && bytes.withUnsafeBytes { mnl_attr_put_check(nlh, cap, UInt16(WGALLOWEDIP_A_IPADDR.rawValue), $0.count, $0.baseAddress) }
            && mnl_attr_put_u8_check(nlh, cap, UInt16(WGALLOWEDIP_A_CIDR_MASK.rawValue), prefix.length)
        if ok { mnl_attr_nest_end(nlh, nest) } else { mnl_attr_nest_cancel(nlh, nest) }
        return ok
    }

    // MARK: GET_DEVICE dump

    /// The dump request for one device by name.
    static func getDeviceRequest(family: UInt16, device: String) -> [UInt8] {
        let buffer = NetlinkMessageBuffer(capacity: 256)
        let nlh = buffer.startGeneric(family: family, command: UInt8(WG_CMD_GET_DEVICE.rawValue), version: UInt8(WG_GENL_VERSION),
                                      flags: UInt16(NLM_F_REQUEST | NLM_F_ACK | NLM_F_DUMP))
        mnl_attr_put_strz(nlh, UInt16(WGDEVICE_A_IFNAME.rawValue), device)
        return buffer.bytes(nlh)
    }

    /// Accumulates the messages of one GET_DEVICE dump into a device.
    ///
    /// Peers are spread over many messages, and one peer's allowed IPs may continue in the next
    /// message as a repeat of the peer with only its key and more prefixes. Peers are therefore merged
    /// by public key (not just "same as the previous one"), and only attributes actually present
    /// overwrite what an earlier part set.
    struct DumpAccumulator {
        var device: WireGuardDevice
        private var peers: [WireGuardPeer] = []
        private var index: [WireGuardKey: Int] = [:]
        /// Messages consumed so far (tests check multipart dumps really were multipart).
        private(set) var messageCount = 0

        init(name: String) {
            device = WireGuardDevice(name: name, backend: .kernel)
        }

        mutating func consume(_ nlh: UnsafePointer<nlmsghdr>) throws(WireGuardError) {
            messageCount += 1
            try NetlinkAttributes.forEach(in: nlh, offset: MemoryLayout<genlmsghdr>.size) { a throws(WireGuardError) in
                switch UInt32(mnl_attr_get_type(a)) {
                case WGDEVICE_A_IFNAME.rawValue: device.name = NetlinkAttributes.string(a)
                case WGDEVICE_A_PRIVATE_KEY.rawValue:
                    let k = try NetlinkAttributes.key(a, "private key")
                    device.privateKey = k.isZero ? nil : k
                case WGDEVICE_A_PUBLIC_KEY.rawValue:
                    let k = try NetlinkAttributes.key(a, "public key")
                    device.publicKey = k.isZero ? nil : k
                case WGDEVICE_A_LISTEN_PORT.rawValue: device.listenPort = try NetlinkAttributes.u16(a, "listen port")
                case WGDEVICE_A_FWMARK.rawValue: device.firewallMark = try NetlinkAttributes.u32(a, "fwmark")
                case WGDEVICE_A_PEERS.rawValue:
                    try NetlinkAttributes.forEachNested(in: a) { p throws(WireGuardError) in try consumePeer(p) }
                default: break
                }
            }
        }

        private mutating func consumePeer(_ nest: UnsafePointer<nlattr>) throws(WireGuardError) {
            var key: WireGuardKey?
            var psk: WireGuardKey?, endpoint: HostPort?, keepalive: UInt16?, handshake: WireGuardTimestamp?
            var rx: UInt64?, tx: UInt64?, version: Int?
            var prefixes: [IPPrefix] = []
            try NetlinkAttributes.forEachNested(in: nest) { a throws(WireGuardError) in
                switch UInt32(mnl_attr_get_type(a)) {
                case WGPEER_A_PUBLIC_KEY.rawValue: key = try NetlinkAttributes.key(a, "peer public key")
                case WGPEER_A_PRESHARED_KEY.rawValue: psk = try NetlinkAttributes.key(a, "preshared key")
                case WGPEER_A_ENDPOINT.rawValue: endpoint = try parseEndpoint(NetlinkAttributes.payload(a))
                case WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL.rawValue: keepalive = try NetlinkAttributes.u16(a, "keepalive")
                case WGPEER_A_LAST_HANDSHAKE_TIME.rawValue:
                    let p = NetlinkAttributes.payload(a)
                    guard p.count >= 16 else { throw .malformedReply("short handshake time") }
                    handshake = WireGuardTimestamp(seconds: p.loadUnaligned(as: Int64.self),
                                                   nanoseconds: p.loadUnaligned(fromByteOffset: 8, as: Int64.self))
                case WGPEER_A_RX_BYTES.rawValue: rx = try NetlinkAttributes.u64(a, "rx bytes")
                case WGPEER_A_TX_BYTES.rawValue: tx = try NetlinkAttributes.u64(a, "tx bytes")
                case WGPEER_A_PROTOCOL_VERSION.rawValue: version = Int(try NetlinkAttributes.u32(a, "protocol version"))
                case WGPEER_A_ALLOWEDIPS.rawValue:
                    try NetlinkAttributes.forEachNested(in: a) { ip throws(WireGuardError) in
                        prefixes.append(try parseAllowedIP(ip))
                    }
                default: break
                }
            }
            guard let key else { throw .malformedReply("peer without public key") }
            let i: Int
            if let existing = index[key] {
                i = existing
            } else {
                i = peers.count
                index[key] = i
                peers.append(WireGuardPeer(publicKey: key))
            }
            if let psk { peers[i].presharedKey = psk.isZero ? nil : psk }
            if let endpoint { peers[i].endpoint = endpoint }
            if let keepalive { peers[i].persistentKeepaliveInterval = keepalive }
            if let handshake { peers[i].lastHandshake = handshake }
            if let rx { peers[i].receiveBytes = rx }
            if let tx { peers[i].transmitBytes = tx }
            if let version { peers[i].protocolVersion = version }
            peers[i].allowedIPs.append(contentsOf: prefixes)
        }

        func finish() -> WireGuardDevice {
            var d = device
            d.peers = peers
            return d
        }
    }

    static func parseAllowedIP(_ nest: UnsafePointer<nlattr>) throws(WireGuardError) -> IPPrefix {
        var family: UInt16?, cidr: UInt8?, addr: IPAddress?
        try NetlinkAttributes.forEachNested(in: nest) { a throws(WireGuardError) in
            switch UInt32(mnl_attr_get_type(a)) {
            case WGALLOWEDIP_A_FAMILY.rawValue: family = try NetlinkAttributes.u16(a, "allowed IP family")
            case WGALLOWEDIP_A_CIDR_MASK.rawValue: cidr = try NetlinkAttributes.u8(a, "allowed IP cidr")
            case WGALLOWEDIP_A_IPADDR.rawValue:
                let p = NetlinkAttributes.payload(a)
                if p.count == 4 {
                    addr = .v4(IPv4Address(p[0], p[1], p[2], p[3]))
                } else if p.count == 16 {
                    addr = IPv6Address(bytes: p).map { .v6($0) }
                }
            default: break
            }
        }
        guard let family, let cidr, let addr,
              (family == UInt16(AF_INET)) == (addr.bitWidth == 32),
              let prefix = IPPrefix(addr, length: cidr) else { throw .malformedReply("bad allowed IP") }
        return prefix
    }

    /// sockaddr_in / sockaddr_in6 to host:port. The IPv6 scope id has no place in ``HostPort`` and is dropped.
    static func parseEndpoint(_ p: UnsafeRawBufferPointer) throws(WireGuardError) -> HostPort? {
        guard p.count >= 2 else { throw .malformedReply("short endpoint") }
        let family = p.loadUnaligned(as: sa_family_t.self)
        let port = UInt16(bigEndian: p.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
        switch Int32(family) {
        case AF_INET:
            guard p.count >= MemoryLayout<sockaddr_in>.size else { throw .malformedReply("short sockaddr_in") }
            let a = IPv4Address(p[4], p[5], p[6], p[7])
            return HostPort(host: a.description, port: port)
        case AF_INET6:
            guard p.count >= MemoryLayout<sockaddr_in6>.size, let a = IPv6Address(bytes: p[8..<24]) else {
                throw .malformedReply("short sockaddr_in6")
            }
            return HostPort(host: a.description, port: port)
        default:
            return nil  // AF_UNSPEC: no endpoint
        }
    }

    // MARK: Inspection of built messages

    /// What one SET_DEVICE message asks for, decoded back from its bytes. Lets tests check the
    /// splitting rules without a kernel.
    struct SetMessageSummary {
        struct Peer {
            var key: WireGuardKey
            var flags: UInt32
            var allowedIPs: Int
        }
        var length: Int
        var deviceFlags: UInt32 = 0
        var hasPrivateKey = false
        var hasListenPort = false
        var hasFirewallMark = false
        var peers: [Peer] = []
    }

    static func summarize(_ message: [UInt8]) throws(WireGuardError) -> SetMessageSummary {
        var summary = SetMessageSummary(length: message.count)
        let result: WireGuardError? = message.withUnsafeBytes { raw -> WireGuardError? in
            let nlh = UnsafePointer(raw.baseAddress!.assumingMemoryBound(to: nlmsghdr.self))
            do throws(WireGuardError) {
                guard Int(nlh.pointee.nlmsg_len) == raw.count else { throw .malformedReply("length mismatch") }
                try NetlinkAttributes.forEach(in: nlh, offset: MemoryLayout<genlmsghdr>.size) { a throws(WireGuardError) in
                    switch UInt32(mnl_attr_get_type(a)) {
                    case WGDEVICE_A_FLAGS.rawValue: summary.deviceFlags = try NetlinkAttributes.u32(a, "flags")
                    case WGDEVICE_A_PRIVATE_KEY.rawValue: summary.hasPrivateKey = true
                    case WGDEVICE_A_LISTEN_PORT.rawValue: summary.hasListenPort = true
                    case WGDEVICE_A_FWMARK.rawValue: summary.hasFirewallMark = true
                    case WGDEVICE_A_PEERS.rawValue:
                        try NetlinkAttributes.forEachNested(in: a) { p throws(WireGuardError) in
                            var peer = SetMessageSummary.Peer(key: .zero, flags: 0, allowedIPs: 0)
                            try NetlinkAttributes.forEachNested(in: p) { f throws(WireGuardError) in
                                switch UInt32(mnl_attr_get_type(f)) {
                                case WGPEER_A_PUBLIC_KEY.rawValue: peer.key = try NetlinkAttributes.key(f, "key")
                                case WGPEER_A_FLAGS.rawValue: peer.flags = try NetlinkAttributes.u32(f, "flags")
                                case WGPEER_A_ALLOWEDIPS.rawValue:
                                    try NetlinkAttributes.forEachNested(in: f) { _ throws(WireGuardError) in peer.allowedIPs += 1 }
                                default: break
                                }
                            }
                            summary.peers.append(peer)
                        }
                    default: break
                    }
                }
                return nil
            } catch {
                return error
            }
        }
        if let result { throw result }
        return summary
    }

    /// Feeds already-built messages (SET requests share the GET reply's attribute tree) through the
    /// dump accumulator, as if the kernel had sent them.
    static func accumulate(_ messages: [[UInt8]], name: String) throws(WireGuardError) -> (WireGuardDevice, Int) {
        var acc = DumpAccumulator(name: name)
        for message in messages {
            let result: WireGuardError? = message.withUnsafeBytes { raw -> WireGuardError? in
                do throws(WireGuardError) {
                    try acc.consume(UnsafePointer(raw.baseAddress!.assumingMemoryBound(to: nlmsghdr.self)))
                    return nil
                } catch {
                    return error
                }
            }
            if let result { throw result }
        }
        return (acc.finish(), acc.messageCount)
    }
}
