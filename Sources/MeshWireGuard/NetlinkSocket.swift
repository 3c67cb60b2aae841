#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CMNL

/// A netlink socket (libmnl) that sends one request at a time and reads every reply to it.
///
/// Not thread-safe: each backend actor owns its sockets and uses them only on its own executor.
final class NetlinkSocket {
    private let nl: OpaquePointer
    let portID: UInt32
    private var sequence: UInt32
    private let receiveBuffer: UnsafeMutableRawBufferPointer

    /// Receive buffer size. The kernel sizes dump batches up to 32 KiB and truncates a datagram that
    /// does not fit, so this must be larger than that, whatever MNL_SOCKET_BUFFER_SIZE says.
    static let receiveBufferSize = 64 * 1024

    /// Opens and binds a socket of `bus` (NETLINK_GENERIC, NETLINK_ROUTE). With `namespacePath`
    /// (e.g. `/run/netns/blue`) the socket is created inside that network namespace and stays bound
    /// to it; the calling thread is switched there and back around `socket(2)`.
    init(bus: Int32, namespacePath: String? = nil) throws(WireGuardError) {
        var restoreFD: Int32 = -1
        if let namespacePath {
            restoreFD = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)
            guard restoreFD >= 0 else { throw .netlink(errno: errno, operation: "open own netns") }
            let target = open(namespacePath, O_RDONLY | O_CLOEXEC)
            guard target >= 0 else {
                let e = errno
                close(restoreFD)
                throw e == ENOENT ? .invalidConfiguration("no network namespace at \(namespacePath)")
                    : .netlink(errno: e, operation: "open \(namespacePath)")
            }
            let rc = cmnl_setns(target, cmnl_clone_newnet())
            let e = errno
            close(target)
            guard rc == 0 else {
                close(restoreFD)
                throw e == EPERM ? .permissionDenied(operation: "setns \(namespacePath)") : .netlink(errno: e, operation: "setns")
            }
        }
        let opened = mnl_socket_open2(bus, Int32(SOCK_CLOEXEC.rawValue))
        let openErrno = errno
        if restoreFD >= 0 {
            // Failing to switch back would leave this queue's thread in the wrong namespace.
            precondition(cmnl_setns(restoreFD, cmnl_clone_newnet()) == 0, "cannot return to the original network namespace")
            close(restoreFD)
        }
        guard let opened else { throw .netlink(errno: openErrno, operation: "socket") }
        guard mnl_socket_bind(opened, 0, pid_t(MNL_SOCKET_AUTOPID)) == 0 else {
            let e = errno
            mnl_socket_close(opened)
            throw .netlink(errno: e, operation: "bind")
        }
        nl = opened
        portID = mnl_socket_get_portid(opened)
        // Acks for large requests would otherwise echo the whole request back.
        var one: Int32 = 1
        _ = mnl_socket_setsockopt(opened, NETLINK_CAP_ACK, &one, socklen_t(MemoryLayout<Int32>.size))
        _ = mnl_socket_setsockopt(opened, NETLINK_EXT_ACK, &one, socklen_t(MemoryLayout<Int32>.size))
        sequence = UInt32(truncatingIfNeeded: time(nil))
        receiveBuffer = .allocate(byteCount: Self.receiveBufferSize, alignment: 8)
    }

    deinit {
        mnl_socket_close(nl)
        receiveBuffer.deallocate()
    }

    /// Sends `message` (a complete netlink message whose sequence number is overwritten) and reads
    /// replies until the request is finished: the ack (NLMSG_ERROR with 0), an error, or NLMSG_DONE
    /// for a dump. Every data message is passed to `onMessage`.
    ///
    /// Throws ``WireGuardError/dumpInterrupted(_:)`` when the kernel flags a dump as inconsistent
    /// (NLM_F_DUMP_INTR) so the caller can retry.
    func request(_ message: inout [UInt8], operation: String, device: String? = nil,
                 onMessage: (UnsafePointer<nlmsghdr>) throws(WireGuardError) -> Void = { _ throws(WireGuardError) in }) throws(WireGuardError) {
        sequence &+= 1
        let seq = sequence
        let (isDump, wantsAck) = message.withUnsafeMutableBytes { raw -> (Bool, Bool) in
            let nlh = raw.baseAddress!.assumingMemoryBound(to: nlmsghdr.self)
            nlh.pointee.nlmsg_seq = seq
            let flags = nlh.pointee.nlmsg_flags
            return (flags & UInt16(NLM_F_DUMP) == UInt16(NLM_F_DUMP), flags & UInt16(NLM_F_ACK) != 0)
        }
        let sent = message.withUnsafeBytes { mnl_socket_sendto(nl, $0.baseAddress, $0.count) }
        if sent < 0 { throw WireGuardError.fromNetlink(errno: errno, operation: operation, device: device) }

        var interrupted = false
        while true {
            let n = mnl_socket_recvfrom(nl, receiveBuffer.baseAddress, receiveBuffer.count)
            if n < 0 {
                if errno == EINTR { continue }
                throw .netlink(errno: errno, operation: "\(operation): recv")
            }
            var remaining = Int32(n)
            var cursor: UnsafePointer<nlmsghdr>? = UnsafePointer(receiveBuffer.baseAddress!.assumingMemoryBound(to: nlmsghdr.self))
            while let nlh = cursor, mnl_nlmsg_ok(nlh, remaining) {
                defer { cursor = cmnl_nlmsg_next(nlh, &remaining) }
                // Replies to other requests (none in our one-at-a-time use) or notifications are skipped.
                guard mnl_nlmsg_portid_ok(nlh, portID), mnl_nlmsg_seq_ok(nlh, seq) else { continue }
                if nlh.pointee.nlmsg_flags & UInt16(NLM_F_DUMP_INTR) != 0 { interrupted = true }
                switch Int32(nlh.pointee.nlmsg_type) {
                case NLMSG_ERROR:
                    let err = mnl_nlmsg_get_payload(nlh)!.assumingMemoryBound(to: nlmsgerr.self).pointee.error
                    if err != 0 { throw WireGuardError.fromNetlink(errno: -err, operation: operation, device: device) }
                    // A zero error is the ack that ends a non-dump request.
                    if !isDump { return }
                case NLMSG_DONE:
                    // A dump's final message carries its status as an int payload.
                    if mnl_nlmsg_get_payload_len(nlh) >= MemoryLayout<Int32>.size {
                        let status = mnl_nlmsg_get_payload(nlh)!.loadUnaligned(as: Int32.self)
                        if status < 0 { throw WireGuardError.fromNetlink(errno: -status, operation: operation, device: device) }
                    }
                    if interrupted { throw .dumpInterrupted(operation) }
                    return
                case NLMSG_NOOP, NLMSG_OVERRUN:
                    continue
                default:
                    try onMessage(nlh)
                    // A plain get without NLM_F_ACK ends with its single reply.
                    if !isDump && !wantsAck && nlh.pointee.nlmsg_flags & UInt16(NLM_F_MULTI) == 0 { return }
                }
            }
        }
    }
}

/// A growable-free message buffer for libmnl's builders: fixed capacity, so `*_check` calls can
/// refuse attributes that would not fit (that is how chunking decides where to split).
final class NetlinkMessageBuffer {
    let capacity: Int
    private let storage: UnsafeMutableRawPointer

    init(capacity: Int) {
        self.capacity = capacity
        storage = .allocate(byteCount: capacity, alignment: 8)
    }

    deinit { storage.deallocate() }

    /// Starts a new message at the beginning of the buffer.
    func start(type: UInt16, flags: UInt16) -> UnsafeMutablePointer<nlmsghdr> {
        memset(storage, 0, capacity)
        let nlh = mnl_nlmsg_put_header(storage)!
        nlh.pointee.nlmsg_type = type
        nlh.pointee.nlmsg_flags = flags
        return nlh
    }

    /// Starts a generic netlink message with its command header.
    func startGeneric(family: UInt16, command: UInt8, version: UInt8, flags: UInt16) -> UnsafeMutablePointer<nlmsghdr> {
        let nlh = start(type: family, flags: flags)
        let genl = mnl_nlmsg_put_extra_header(nlh, MemoryLayout<genlmsghdr>.size)!.assumingMemoryBound(to: genlmsghdr.self)
        genl.pointee.cmd = command
        genl.pointee.version = version
        return nlh
    }

    /// The finished message's bytes.
    func bytes(_ nlh: UnsafeMutablePointer<nlmsghdr>) -> [UInt8] {
        Array(UnsafeRawBufferPointer(start: storage, count: Int(nlh.pointee.nlmsg_len)))
    }
}

/// Iteration over netlink attributes (mnl_attr_for_each / mnl_attr_for_each_nested).
enum NetlinkAttributes {
    /// Calls `body` with each top-level attribute of a message, after `offset` bytes of fixed headers.
    static func forEach(in nlh: UnsafePointer<nlmsghdr>, offset: Int,
                        _ body: (UnsafePointer<nlattr>) throws(WireGuardError) -> Void) throws(WireGuardError) {
        var attr = UnsafePointer(cmnl_attr_first(nlh, offset))
        while let a = attr, cmnl_attr_ok_in_message(nlh, a) {
            try body(a)
            attr = UnsafePointer(mnl_attr_next(a))
        }
    }

    /// Calls `body` with each attribute nested in `nest`.
    static func forEachNested(in nest: UnsafePointer<nlattr>,
                              _ body: (UnsafePointer<nlattr>) throws(WireGuardError) -> Void) throws(WireGuardError) {
        var attr = UnsafePointer(cmnl_nested_first(nest))
        while let a = attr, cmnl_nested_ok(nest, a) {
            try body(a)
            attr = UnsafePointer(mnl_attr_next(a))
        }
    }

    static func payload(_ a: UnsafePointer<nlattr>) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: mnl_attr_get_payload(a), count: Int(mnl_attr_get_payload_len(a)))
    }

    static func u8(_ a: UnsafePointer<nlattr>, _ what: String) throws(WireGuardError) -> UInt8 {
        guard mnl_attr_get_payload_len(a) >= 1 else { throw .malformedReply("\(what): short attribute") }
        return mnl_attr_get_u8(a)
    }

    static func u16(_ a: UnsafePointer<nlattr>, _ what: String) throws(WireGuardError) -> UInt16 {
        guard mnl_attr_get_payload_len(a) >= 2 else { throw .malformedReply("\(what): short attribute") }
        return mnl_attr_get_u16(a)
    }

    static func u32(_ a: UnsafePointer<nlattr>, _ what: String) throws(WireGuardError) -> UInt32 {
        guard mnl_attr_get_payload_len(a) >= 4 else { throw .malformedReply("\(what): short attribute") }
        return mnl_attr_get_u32(a)
    }

    static func u64(_ a: UnsafePointer<nlattr>, _ what: String) throws(WireGuardError) -> UInt64 {
        guard mnl_attr_get_payload_len(a) >= 8 else { throw .malformedReply("\(what): short attribute") }
        return payload(a).loadUnaligned(as: UInt64.self)
    }

    static func key(_ a: UnsafePointer<nlattr>, _ what: String) throws(WireGuardError) -> WireGuardKey {
        let p = payload(a)
        guard p.count == WireGuardKey.byteCount else { throw .malformedReply("\(what): \(p.count) bytes, not 32") }
        return WireGuardKey(unsafeRaw: p)
    }

    static func string(_ a: UnsafePointer<nlattr>) -> String {
        String(decoding: payload(a).prefix { $0 != 0 }, as: UTF8.self)
    }
}
