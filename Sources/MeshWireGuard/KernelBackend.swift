#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CMNL
import Logging

/// Controls in-kernel WireGuard over generic netlink (family "wireguard"), as `wg` does.
///
/// Reads use NLM_F_DUMP and consume every part of the multipart reply; writes are split into
/// messages below ``maxMessageSize`` and each one is acknowledged (NLM_F_ACK) before the next goes.
/// Netlink I/O runs on the actor's private queue, never on the cooperative pool.
public actor KernelBackend: WireGuardBackend {
    /// Always ``WireGuardBackendKind/kernel``.
    public nonisolated let kind = WireGuardBackendKind.kernel
    /// Upper bound for one SET_DEVICE message, in bytes.
    public nonisolated let maxMessageSize: Int
    /// The network namespace the sockets live in (nil: the caller's).
    public nonisolated let namespacePath: String?
    private let logger: Logger
    private let executor = BlockingExecutor(label: "mesh.wireguard.netlink")
    private var socket: NetlinkSocket?
    private var family: UInt16?
    private let links: RouteNetlink

    /// The actor runs on its own queue; see the type's documentation.
    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    /// Creates a backend. Nothing is opened until the first call.
    /// - Parameters:
    ///   - namespacePath: open the netlink sockets inside this network namespace (`/run/netns/NAME`).
    ///   - maxMessageSize: split SET requests into messages of at most this many bytes.
    public init(namespacePath: String? = nil, maxMessageSize: Int = 32 * 1024, logger: Logger) {
        self.namespacePath = namespacePath
        self.maxMessageSize = maxMessageSize
        self.logger = logger
        links = RouteNetlink(namespacePath: namespacePath, logger: logger)
    }

    /// True when the running kernel has the "wireguard" generic netlink family (module loaded or built in).
    public func isAvailable() -> Bool {
        do {
            _ = try familyID()
            return true
        } catch {
            return false
        }
    }

    /// Resolves the family id through CTRL_CMD_GETFAMILY, once.
    func familyID() throws(WireGuardError) -> UInt16 {
        if let family { return family }
        let id = try Self.resolveFamily(WG_GENL_NAME, on: try openSocket())
        family = id
        return id
    }

    static func resolveFamily(_ name: String, on socket: NetlinkSocket) throws(WireGuardError) -> UInt16 {
        let buffer = NetlinkMessageBuffer(capacity: 256)
        let nlh = buffer.startGeneric(family: UInt16(GENL_ID_CTRL), command: UInt8(CTRL_CMD_GETFAMILY), version: 1,
                                      flags: UInt16(NLM_F_REQUEST | NLM_F_ACK))
        mnl_attr_put_strz(nlh, UInt16(CTRL_ATTR_FAMILY_NAME), name)
        var request = buffer.bytes(nlh)
        var id: UInt16?
        do {
            try socket.request(&request, operation: "resolve genl family \(name)") { reply throws(WireGuardError) in
                try NetlinkAttributes.forEach(in: reply, offset: MemoryLayout<genlmsghdr>.size) { a throws(WireGuardError) in
                    if UInt32(mnl_attr_get_type(a)) == CTRL_ATTR_FAMILY_ID { id = try NetlinkAttributes.u16(a, "family id") }
                }
            }
        } catch {
            if case .netlink(let e, _) = error, e == ENOENT { throw .deviceNotFound("generic netlink family \(name)") }
            throw error
        }
        guard let id else { throw .malformedReply("CTRL_CMD_GETFAMILY reply without a family id") }
        return id
    }

    private func openSocket() throws(WireGuardError) -> NetlinkSocket {
        if let socket { return socket }
        let s = try NetlinkSocket(bus: NETLINK_GENERIC, namespacePath: namespacePath)
        socket = s
        return s
    }

    /// WireGuard links, found through rtnetlink by their kind, as `wg show` lists them.
    public func deviceNames() async throws(WireGuardError) -> [String] {
        try await links.links().filter { $0.kind == "wireguard" }.map(\.name).sorted()
    }

    public func device(named name: String) throws(WireGuardError) -> WireGuardDevice {
        try dump(name).device
    }

    /// Reads a device and says how many netlink messages the dump took (for tests of multipart reads).
    func dump(_ name: String) throws(WireGuardError) -> (device: WireGuardDevice, messages: Int) {
        let family = try familyID()
        let socket = try openSocket()
        // A dump is flagged NLM_F_DUMP_INTR when the device changed mid-way; read it again.
        var attempts = 0
        while true {
            attempts += 1
            var request = WireGuardNetlink.getDeviceRequest(family: family, device: name)
            var acc = WireGuardNetlink.DumpAccumulator(name: name)
            do {
                try socket.request(&request, operation: "get \(name)", device: name) { nlh throws(WireGuardError) in
                    try acc.consume(nlh)
                }
                return (acc.finish(), acc.messageCount)
            } catch {
                guard case .dumpInterrupted = error, attempts < 5 else { throw error }
                logger.debug("dump interrupted, retrying", metadata: ["device": "\(name)"])
            }
        }
    }

    @discardableResult
    public func configure(device name: String, _ config: WireGuardConfig) throws(WireGuardError) -> WireGuardConfigureReport {
        try config.validate()
        let family = try familyID()
        let socket = try openSocket()
        var skipped: [WireGuardKey] = []
        let updateOnly = config.updateOnlyKeys
        if !updateOnly.isEmpty {
            // The kernel skips update-only peers it does not have without an error (set_peer returns 0);
            // look first so the caller is told, as the userspace backend does.
            let existing = Set(try dump(name).device.peers.map(\.publicKey))
            skipped = updateOnly.filter { !existing.contains($0) }
        }
        let messages = try WireGuardNetlink.setDeviceMessages(family: family, device: name, config: config,
                                                              maxMessageSize: maxMessageSize)
        for var message in messages {
            try socket.request(&message, operation: "set \(name)", device: name)
        }
        return WireGuardConfigureReport(skippedUpdateOnlyPeers: skipped, requestCount: messages.count)
    }
}
