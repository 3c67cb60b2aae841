#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CMNL  // sys/socket.h: SOCK_STREAM and SOCK_CLOEXEC, which Glibc alone does not export in every build mode
import Logging

/// Controls userspace WireGuard (wireguard-go, boringtun) through its UAPI unix socket,
/// `<socketDirectory>/<iface>.sock`.
///
/// Each call opens its own connection, as `wg` does, so a restarted daemon is picked up without
/// reconnect logic. Socket I/O runs on the actor's private queue, never on the cooperative pool.
public actor UAPIBackend: WireGuardBackend {
    /// The directory userspace daemons put their sockets in on Linux.
    public static let defaultSocketDirectory = "/var/run/wireguard"

    /// Always ``WireGuardBackendKind/userspace``.
    public nonisolated let kind = WireGuardBackendKind.userspace
    /// Where the sockets live.
    public nonisolated let socketDirectory: String
    private let logger: Logger
    private let executor = BlockingExecutor(label: "mesh.wireguard.uapi")

    /// The actor runs on its own queue; see the type's documentation.
    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    /// Creates a backend for the daemons whose sockets are in `socketDirectory`.
    public init(socketDirectory: String = UAPIBackend.defaultSocketDirectory, logger: Logger) {
        self.socketDirectory = socketDirectory
        self.logger = logger
    }

    /// The socket path for an interface.
    public nonisolated func socketPath(for name: String) -> String { "\(socketDirectory)/\(name).sock" }

    /// True when a socket file exists for the interface (it may still be stale).
    public nonisolated func hasSocket(for name: String) -> Bool {
        var st = stat()
        return stat(socketPath(for: name), &st) == 0 && (st.st_mode & S_IFMT) == S_IFSOCK
    }

    public func deviceNames() throws(WireGuardError) -> [String] {
        guard let dir = opendir(socketDirectory) else {
            if errno == ENOENT { return [] }
            throw .uapi(errno: errno, operation: "list \(socketDirectory)")
        }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard name.hasSuffix(".sock") else { continue }
            let iface = String(name.dropLast(5))
            if hasSocket(for: iface) { names.append(iface) }
        }
        return names.sorted()
    }

    public func device(named name: String) throws(WireGuardError) -> WireGuardDevice {
        var parser = UAPIProtocol.GetReplyParser(device: name, keepsAllowedIPs: true)
        try streamGet(name, &parser)
        return try parser.device()
    }

    /// Reads the device's key, port and peers' activity; the allowed-IP lines are skipped as they
    /// arrive.
    public func activity(named name: String) throws(WireGuardError) -> WireGuardActivityReading {
        var parser = UAPIProtocol.GetReplyParser(device: name, keepsAllowedIPs: false)
        try streamGet(name, &parser, drops: UAPIProtocol.carriesNoActivity)
        return try parser.activityReading()
    }

    /// Sends `get=1`, takes the whole reply, then parses it through the receive buffer. `drops` takes
    /// out the lines a reading has no use for as they arrive.
    ///
    /// The reply is drained first, at memory speed, into 1 MiB pieces: wireguard-go holds its IPC lock
    /// until the whole reply is written, so no peer change goes in until it has been read, and parsing
    /// while reading would make every change wait for the parse too (at 50,000 peers: p99 of
    /// one-peer removals 389 ms against under 10 ms; docs/benchmarks.md, "Scale"). The pieces are
    /// then parsed line by line and each is freed once parsed: the reply is never copied into one
    /// contiguous buffer (which grew by copying to 64 MiB for a 17 MB reply), and peers come out
    /// one at a time.
    private func streamGet(_ name: String, _ parser: inout UAPIProtocol.GetReplyParser,
                           drops: (@Sendable (UnsafeRawPointer, Int) -> Bool)? = nil) throws(WireGuardError) {
        let op = "get \(name)"
        let reply = ReplyPieces(drops: drops)
        do {
            let fd = try connect(name, op)
            defer { close(fd) }
            try writeAll(fd, UAPIProtocol.getRequest, op)
            try reply.read(fd, op)
        }
        parser.reserve(peerCount: reply.peerLines)
        let window = receive.bytes
        var filled = 0
        while true {
            let copied = reply.take(into: UnsafeMutableBufferPointer(rebasing: window[filled...]))
            filled += copied
            let (used, ended) = try UAPIProtocol.forEachCompleteLine(UnsafeBufferPointer(rebasing: window[0..<filled])) {
                key, value throws(WireGuardError) in try parser.line(key, value)
            }
            if ended { return }
            if copied == 0 && used == 0 {
                if filled == window.count { throw .malformedReply("\(op): a line longer than \(window.count) bytes") }
                throw .malformedReply("\(op): the reply ended without its blank line")
            }
            // The partial last line moves to the front for the next piece.
            if used > 0 {
                memmove(window.baseAddress!, window.baseAddress! + used, filled - used)
                filled -= used
            }
        }
    }

    @discardableResult
    public func configure(device name: String, _ config: WireGuardConfig) throws(WireGuardError) -> WireGuardConfigureReport {
        try config.validate()
        var skipped: [WireGuardKey] = []
        let updateOnly = config.updateOnlyKeys
        if !updateOnly.isEmpty {
            // The daemon drops update-only peers it does not know without a word; look first so the
            // caller is told. Nothing else changes the device between the two calls in our design
            // (one applier owns it), and the daemon's own semantics are kept either way.
            let existing = Set(try device(named: name).peers.map(\.publicKey))
            skipped = updateOnly.filter { !existing.contains($0) }
        }
        let request = UAPIProtocol.encodeSet(config)
        try exchange(name, request, operation: "set") { reply throws(WireGuardError) in
            try UAPIProtocol.parseSetReply(reply, device: name)
        }
        if !skipped.isEmpty {
            logger.debug("update-only peers not present, skipped", metadata: ["device": "\(name)", "count": "\(skipped.count)"])
        }
        return WireGuardConfigureReport(skippedUpdateOnlyPeers: skipped, requestCount: 1)
    }

    /// Sends a raw request and returns the raw reply (up to and including the blank line).
    /// Exposed for benchmarks and tests that compare against the protocol itself.
    public func rawExchange(device name: String, request: [UInt8]) throws(WireGuardError) -> [UInt8] {
        try exchange(name, request, operation: "raw") { reply throws(WireGuardError) in Array(reply) }
    }

    /// Reused across calls: a 10,000-peer reply is several megabytes, and growing a fresh buffer each
    /// time (copies, page faults) cost as much as parsing it. Confined to this actor.
    private let receive = ReceiveBuffer()
    /// A buffer grown past this is released after the call instead of being kept.
    private static let retainedBufferLimit = 32 * 1024 * 1024

    /// Sends `request` and hands the complete reply to `body`; the bytes are valid only inside it.
    private func exchange<R>(_ name: String, _ request: [UInt8], operation: String,
                             _ body: (UnsafeBufferPointer<UInt8>) throws(WireGuardError) -> R) throws(WireGuardError) -> R {
        let op = "\(operation) \(name)"
        let fd = try connect(name, op)
        defer { close(fd) }
        let count: Int
        do {
            try writeAll(fd, request, op)
            count = try readReply(fd, op)
        } catch {
            // The daemon stops reading at the first line it rejects, answers `errno=N` and hangs up,
            // so a long request ends in EPIPE. Its answer is the real error: read it if it is there.
            guard case .uapi(let e, _) = error, e == EPIPE || e == ECONNRESET,
                  let n = try? readReply(fd, op) else { throw error }
            count = n
        }
        defer { receive.shrink(above: Self.retainedBufferLimit) }
        return try body(UnsafeBufferPointer(rebasing: receive.bytes[0..<count]))
    }

    /// Reads one whole reply into the receive buffer and returns its length.
    private func readReply(_ fd: Int32, _ op: String) throws(WireGuardError) -> Int {
        var count = 0
        while true {
            if count == receive.bytes.count { receive.grow() }
            let buffer = receive.bytes
            let n = read(fd, buffer.baseAddress! + count, buffer.count - count)
            if n < 0 {
                if errno == EINTR { continue }
                throw .uapi(errno: errno, operation: op)
            }
            if n == 0 { throw .malformedReply("\(op): connection closed before the end of the reply") }
            count += n
            // Every reply ends with `errno=N` and a blank line, and no earlier line is empty.
            if count >= 2 && buffer[count - 1] == UInt8(ascii: "\n") && buffer[count - 2] == UInt8(ascii: "\n") {
                return count
            }
        }
    }

    private func connect(_ name: String, _ op: String) throws(WireGuardError) -> Int32 {
        let path = socketPath(for: name)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: addr.sun_path)
        guard path.utf8.count < capacity else { throw .invalidConfiguration("socket path too long: \(path)") }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in path.utf8.enumerated() { raw[i] = b }
            raw[path.utf8.count] = 0
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .uapi(errno: errno, operation: op) }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        if rc != 0 {
            let e = errno
            close(fd)
            switch e {
            case ENOENT, ECONNREFUSED: throw .deviceNotFound(name)
            case EACCES, EPERM: throw .permissionDenied(operation: op)
            default: throw .uapi(errno: e, operation: op)
            }
        }
        return fd
    }

    private func writeAll(_ fd: Int32, _ bytes: [UInt8], _ op: String) throws(WireGuardError) {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { raw in
                send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw .uapi(errno: errno, operation: op)
            }
            offset += n
        }
    }
}

/// The UAPI backend's reply buffer; owned by one actor and only touched on its executor.
private final class ReceiveBuffer {
    private(set) var bytes = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: 64 * 1024)

    deinit { bytes.deallocate() }

    func grow() {
        let bigger = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: bytes.count * 4)
        _ = bigger.initialize(fromContentsOf: bytes)
        bytes.deallocate()
        bytes = bigger
    }

    func shrink(above limit: Int) {
        guard bytes.count > limit else { return }
        bytes.deallocate()
        bytes = .allocate(capacity: 64 * 1024)
    }
}

/// A reply read whole, in 1 MiB pieces, handed out in order and freed as it is handed out. Confined
/// to the actor that made it (internal for its tests).
///
/// The pieces are anonymous memory maps of their own, not heap blocks: unmapping one gives its pages
/// back at once, where freed heap blocks of this size stay in the process (glibc raises its mmap
/// threshold after the first free) and leave the heap larger after every reading.
///
/// Lines the caller does not want (`drops`) are taken out as the reply arrives, by moving the kept
/// lines down within the piece: only whole lines are looked at, with `memchr`, so the reading keeps
/// the pace of the socket (the daemon holds its IPC lock until the reply is read; see `streamGet`).
final class ReplyPieces {
    static let pieceSize = 1 << 20
    private let drops: (@Sendable (UnsafeRawPointer, Int) -> Bool)?
    private var pieces: [UnsafeMutableRawPointer] = []
    /// Bytes handed out by `take` in each piece: its kept lines.
    private var counts: [Int] = []
    /// The piece and offset `take` continues from.
    private var next = 0
    private var offset = 0
    /// `public_key=` lines kept: the peers in the reply, so the parser sizes its array once instead
    /// of doubling it (which holds the old and the new array at once: 50,000 peers' activity is 4.4 MB).
    private(set) var peerLines = 0

    init(drops: (@Sendable (UnsafeRawPointer, Int) -> Bool)? = nil) { self.drops = drops }

    deinit { for p in pieces[next...] { munmap(p, Self.pieceSize) } }

    private func newPiece(_ op: String) throws(WireGuardError) -> UnsafeMutableRawPointer {
        let p = mmap(nil, Self.pieceSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let p, p != MAP_FAILED else { throw .uapi(errno: errno, operation: "\(op): map a reply piece") }
        pieces.append(p)
        counts.append(0)
        return p
    }

    /// Reads until the reply's blank line. Every reply ends with `errno=N` and a blank line, and no
    /// earlier line is empty.
    func read(_ fd: Int32, _ op: String) throws(WireGuardError) {
        var piece = try newPiece(op)
        var kept = 0      // end of the kept complete lines
        var pending = 0   // start of the line not yet complete
        var end = 0       // end of what was read
        while true {
            if end == Self.pieceSize {
                // The piece is full: its partial line moves to the start of a new one.
                let partial = end - pending
                if partial == Self.pieceSize { throw .malformedReply("\(op): a line longer than \(Self.pieceSize) bytes") }
                counts[counts.count - 1] = kept
                let fresh = try newPiece(op)
                fresh.copyMemory(from: piece + pending, byteCount: partial)
                piece = fresh
                kept = 0; pending = 0; end = partial
            }
            let n = Glibc.read(fd, piece + end, Self.pieceSize - end)
            if n < 0 {
                if errno == EINTR { continue }
                throw .uapi(errno: errno, operation: op)
            }
            if n == 0 { throw .malformedReply("\(op): connection closed before the end of the reply") }
            end += n
            while pending < end, let newline = memchr(piece + pending, Int32(UInt8(ascii: "\n")), end - pending) {
                let length = newline - (piece + pending) + 1
                if drops?(piece + pending, length) != true {
                    if length > 2 && piece.load(fromByteOffset: pending, as: UInt8.self) == UInt8(ascii: "p")
                        && piece.load(fromByteOffset: pending + 1, as: UInt8.self) == UInt8(ascii: "u") { peerLines += 1 }
                    if kept != pending { memmove(piece + kept, piece + pending, length) }
                    kept += length
                }
                pending += length
                if length == 1 {
                    // The blank line: the reply is complete.
                    counts[counts.count - 1] = kept
                    return
                }
            }
        }
    }

    /// Copies the next bytes into `destination`; returns how many (0 at the end).
    func take(into destination: UnsafeMutableBufferPointer<UInt8>) -> Int {
        var copied = 0
        while copied < destination.count && next < pieces.count {
            let count = counts[next]
            let n = min(count - offset, destination.count - copied)
            UnsafeMutableRawPointer(destination.baseAddress! + copied).copyMemory(from: pieces[next] + offset, byteCount: n)
            copied += n
            offset += n
            if offset == count {
                munmap(pieces[next], Self.pieceSize)
                next += 1
                offset = 0
            }
        }
        return copied
    }
}
