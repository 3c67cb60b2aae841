#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import MeshNet

/// The cross-platform configuration protocol spoken on `/var/run/wireguard/<iface>.sock`
/// (`get=1` / `set=1`, `key=value` lines, keys in hex, a blank line ends a message, and every
/// reply ends with `errno=N`). Pure encoding and parsing, kept apart from the socket for tests.
enum UAPIProtocol {
    /// The request for a full reading.
    static let getRequest: [UInt8] = Array("get=1\n\n".utf8)

    /// Encodes a change as one `set=1` operation.
    ///
    /// `update_only` goes straight after `public_key`: wireguard-go creates the peer on the
    /// `public_key` line and only drops it again when it reads `update_only`, so any line in
    /// between would act on a peer that is about to vanish.
    static func encodeSet(_ config: WireGuardConfig) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(64 + config.peers.count * 220)
        func line(_ key: String, _ value: String) {
            out.append(contentsOf: key.utf8)
            out.append(UInt8(ascii: "="))
            out.append(contentsOf: value.utf8)
            out.append(UInt8(ascii: "\n"))
        }
        func keyLine(_ key: String, _ k: WireGuardKey) {
            out.append(contentsOf: key.utf8)
            out.append(UInt8(ascii: "="))
            k.appendHex(to: &out)
            out.append(UInt8(ascii: "\n"))
        }
        out.append(contentsOf: "set=1\n".utf8)
        if let k = config.privateKey { keyLine("private_key", k) }
        if let p = config.listenPort { line("listen_port", String(p)) }
        if let m = config.firewallMark { line("fwmark", String(m)) }
        if config.replacePeers { line("replace_peers", "true") }
        for peer in config.peers {
            keyLine("public_key", peer.publicKey)
            if peer.remove {
                line("remove", "true")
                continue
            }
            if peer.updateOnly { line("update_only", "true") }
            if let k = peer.presharedKey { keyLine("preshared_key", k) }
            if let e = peer.endpoint { line("endpoint", e.description) }
            if let k = peer.persistentKeepaliveInterval { line("persistent_keepalive_interval", String(k)) }
            if peer.replaceAllowedIPs { line("replace_allowed_ips", "true") }
            for prefix in peer.allowedIPs { line("allowed_ip", prefix.description) }
        }
        out.append(UInt8(ascii: "\n"))
        return out
    }

    /// True once `buffer` holds a whole reply: every reply ends with `errno=N` and a blank line,
    /// and no earlier line is empty, so the first "\n\n" is the end.
    static func isComplete(_ buffer: [UInt8]) -> Bool {
        let n = buffer.count
        return n >= 2 && buffer[n - 1] == UInt8(ascii: "\n") && buffer[n - 2] == UInt8(ascii: "\n")
    }

    /// Parses the reply to `set=1`: just the errno.
    static func parseSetReply(_ reply: [UInt8], device: String) throws(WireGuardError) {
        let result: WireGuardError? = reply.withUnsafeBufferPointer { buf -> WireGuardError? in
            do throws(WireGuardError) {
                try parseSetReply(buf, device: device)
                return nil
            } catch {
                return error
            }
        }
        if let result { throw result }
    }

    static func parseSetReply(_ reply: UnsafeBufferPointer<UInt8>, device: String) throws(WireGuardError) {
        var errnoValue: Int64?
        try forEachLine(reply) { key, value throws(WireGuardError) in
            guard equals(key, "errno") else {
                throw .malformedReply("unexpected line in set reply: \(String(decoding: key, as: UTF8.self))")
            }
            errnoValue = try integer(value, "errno")
        }
        guard let e = errnoValue else { throw .malformedReply("set reply without errno") }
        if e != 0 { throw WireGuardError.fromUAPI(errno: e, operation: "set \(device)", device: device) }
    }

    /// Parses the reply to `get=1` into a device reading. The device's public key is derived from the
    /// private key, as the protocol does not carry it.
    static func parseGetReply(_ reply: [UInt8], device name: String) throws(WireGuardError) -> WireGuardDevice {
        let result: Result<WireGuardDevice, WireGuardError> = reply.withUnsafeBufferPointer { buf in
            do throws(WireGuardError) {
                return .success(try parseGetReply(buf, device: name))
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    static func parseGetReply(_ reply: UnsafeBufferPointer<UInt8>, device name: String) throws(WireGuardError) -> WireGuardDevice {
        var parser = GetReplyParser(device: name, keepsAllowedIPs: true)
        parser.reserve(peerCount: reply.count / 320)  // a peer takes 300-400 bytes of reply
        try forEachLine(reply) { key, value throws(WireGuardError) in try parser.line(key, value) }
        return try parser.device()
    }

    /// Parses a `get=1` reply one line at a time, whatever pieces it comes in: the backend feeds it
    /// through a small window (50,000 peers are about 17 MB of reply). With `keepsAllowedIPs`
    /// off, the allowed-IP lines are skipped and the result is an activity reading.
    struct GetReplyParser {
        let name: String
        let keepsAllowedIPs: Bool
        private var header: WireGuardDevice
        private var peers: [WireGuardPeer] = []
        private var activity: [WireGuardPeerActivity] = []
        // The peer being read is mutated in place: copying it out of an optional per line would copy
        // its allowed-IP array on every append.
        private var peer = WireGuardPeer(publicKey: .zero)
        private var inPeer = false
        private var errnoValue: Int64?

        init(device name: String, keepsAllowedIPs: Bool) {
            self.name = name
            self.keepsAllowedIPs = keepsAllowedIPs
            header = WireGuardDevice(name: name, backend: .userspace)
        }

        /// Sizes the peer array once, for `count` peers.
        mutating func reserve(peerCount count: Int) {
            if keepsAllowedIPs { peers.reserveCapacity(count) } else { activity.reserveCapacity(count) }
        }

        private mutating func finishPeer() {
            guard inPeer else { return }
            if keepsAllowedIPs {
                peers.append(peer)
            } else {
                activity.append(WireGuardPeerActivity(peer))
            }
        }

        mutating func line(_ key: Bytes, _ value: Bytes) throws(WireGuardError) {
            if errnoValue != nil { throw .malformedReply("data after errno") }
            if equals(key, "public_key") {
                finishPeer()
                peer = WireGuardPeer(publicKey: try parseKey(value, "public_key"))
                inPeer = true
                return
            }
            if equals(key, "errno") {
                errnoValue = try integer(value, "errno")
                return
            }
            if inPeer {
                if equals(key, "allowed_ip") {
                    guard let prefix = AddressBytes.prefix(value) else {
                        throw .malformedReply("bad allowed_ip \(String(decoding: value, as: UTF8.self))")
                    }
                    if keepsAllowedIPs { peer.allowedIPs.append(prefix) }
                } else if equals(key, "preshared_key") {
                    let k = try parseKey(value, "preshared_key")
                    peer.presharedKey = k.isZero ? nil : k
                } else if equals(key, "endpoint") {
                    guard let hp = ByteParsing.endpoint(value) else {
                        throw .malformedReply("bad endpoint \(String(decoding: value, as: UTF8.self))")
                    }
                    peer.endpoint = hp
                } else if equals(key, "last_handshake_time_sec") {
                    peer.lastHandshake.seconds = try integer(value, "last_handshake_time_sec")
                } else if equals(key, "last_handshake_time_nsec") {
                    peer.lastHandshake.nanoseconds = try integer(value, "last_handshake_time_nsec")
                } else if equals(key, "rx_bytes") {
                    peer.receiveBytes = UInt64(clamping: try integer(value, "rx_bytes"))
                } else if equals(key, "tx_bytes") {
                    peer.transmitBytes = UInt64(clamping: try integer(value, "tx_bytes"))
                } else if equals(key, "persistent_keepalive_interval") {
                    peer.persistentKeepaliveInterval = UInt16(clamping: try integer(value, "persistent_keepalive_interval"))
                } else if equals(key, "protocol_version") {
                    peer.protocolVersion = Int(try integer(value, "protocol_version"))
                }
                // Other keys (boringtun and newer daemons add some) carry nothing this model holds.
                return
            }
            if equals(key, "private_key") {
                let k = try parseKey(value, "private_key")
                if !k.isZero {
                    header.privateKey = k
                    header.publicKey = k.publicKeyOfPrivate
                }
            } else if equals(key, "listen_port") {
                header.listenPort = UInt16(clamping: try integer(value, "listen_port"))
            } else if equals(key, "fwmark") {
                header.firewallMark = UInt32(clamping: try integer(value, "fwmark"))
            }
        }

        /// Ends the reply: the last peer, and the errno, which must be there and zero.
        private mutating func end() throws(WireGuardError) {
            finishPeer()
            inPeer = false
            guard let e = errnoValue else { throw .malformedReply("get reply without errno") }
            if e != 0 { throw WireGuardError.fromUAPI(errno: e, operation: "get \(name)", device: name) }
        }

        /// The whole reading (every field of every peer).
        mutating func device() throws(WireGuardError) -> WireGuardDevice {
            try end()
            var device = header
            device.peers = peers
            return device
        }

        /// The activity reading (no allowed IPs).
        mutating func activityReading() throws(WireGuardError) -> WireGuardActivityReading {
            try end()
            return WireGuardActivityReading(name: name, privateKey: header.privateKey, listenPort: header.listenPort, peers: activity)
        }
    }

    // MARK: Byte-level helpers

    typealias Bytes = Slice<UnsafeBufferPointer<UInt8>>

    /// Calls `body` for each `key=value` line up to the terminating blank line.
    /// memchr does the scanning: a 10,000-peer reply is several megabytes of long hex lines.
    static func forEachLine(_ buf: UnsafeBufferPointer<UInt8>, _ body: (Bytes, Bytes) throws(WireGuardError) -> Void) throws(WireGuardError) {
        let result: WireGuardError? = { () -> WireGuardError? in
            guard let base = buf.baseAddress else { return nil }
            var start = 0
            let n = buf.count
            while start < n {
                let end = memchr(base + start, Int32(UInt8(ascii: "\n")), n - start)
                    .map { UnsafePointer($0.assumingMemoryBound(to: UInt8.self)) - base } ?? n
                if end == start { return nil }  // blank line: end of message
                guard let eqPointer = memchr(base + start, Int32(UInt8(ascii: "=")), end - start) else {
                    return .malformedReply("line without '=': \(String(decoding: buf[start..<end], as: UTF8.self))")
                }
                let eq = UnsafePointer(eqPointer.assumingMemoryBound(to: UInt8.self)) - base
                do throws(WireGuardError) {
                    try body(buf[start..<eq], buf[(eq + 1)..<end])
                } catch {
                    return error
                }
                start = end + 1
            }
            return nil
        }()
        if let result { throw result }
    }

    /// True for a `get` reply line an activity reading does not use: a peer's allowed IPs, preshared
    /// key, protocol version and keepalive (about half of the reply's bytes). `line` runs up to and
    /// including its newline.
    @Sendable
    static func carriesNoActivity(_ line: UnsafeRawPointer, _ length: Int) -> Bool {
        func starts(_ prefix: StaticString) -> Bool {
            length > prefix.utf8CodeUnitCount && memcmp(line, prefix.utf8Start, prefix.utf8CodeUnitCount) == 0
        }
        switch line.load(as: UInt8.self) {
        case UInt8(ascii: "a"): return starts("allowed_ip=")
        case UInt8(ascii: "p"): return starts("preshared_key=") || starts("protocol_version=") || starts("persistent_keepalive_interval=")
        default: return false
        }
    }

    /// Calls `body` for each complete (newline-ended) `key=value` line of `buf`, stopping at the blank
    /// line that ends a message. Returns how many bytes were used (a partial last line is left for
    /// the next read) and whether the blank line was reached.
    static func forEachCompleteLine(_ buf: UnsafeBufferPointer<UInt8>,
                                    _ body: (Bytes, Bytes) throws(WireGuardError) -> Void) throws(WireGuardError) -> (used: Int, ended: Bool) {
        guard let base = buf.baseAddress else { return (0, false) }
        var start = 0
        let n = buf.count
        while start < n {
            guard let newline = memchr(base + start, Int32(UInt8(ascii: "\n")), n - start) else { break }
            let end = UnsafePointer(newline.assumingMemoryBound(to: UInt8.self)) - base
            if end == start { return (end + 1, true) }
            guard let eqPointer = memchr(base + start, Int32(UInt8(ascii: "=")), end - start) else {
                throw .malformedReply("line without '=': \(String(decoding: buf[start..<end], as: UTF8.self))")
            }
            let eq = UnsafePointer(eqPointer.assumingMemoryBound(to: UInt8.self)) - base
            try body(buf[start..<eq], buf[(eq + 1)..<end])
            start = end + 1
        }
        return (start, false)
    }

    @inline(__always)
    static func equals(_ bytes: Bytes, _ literal: StaticString) -> Bool {
        bytes.count == literal.utf8CodeUnitCount
            && memcmp(bytes.base.baseAddress! + bytes.startIndex, literal.utf8Start, bytes.count) == 0
    }

    static func integer(_ bytes: Bytes, _ what: String) throws(WireGuardError) -> Int64 {
        var negative = false
        var value: Int64 = 0
        var digits = 0
        for (i, b) in bytes.enumerated() {
            if i == 0 && b == UInt8(ascii: "-") { negative = true; continue }
            guard b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") else {
                throw .malformedReply("\(what) is not a number: \(String(decoding: bytes, as: UTF8.self))")
            }
            let (m, o1) = value.multipliedReportingOverflow(by: 10)
            let (s, o2) = m.addingReportingOverflow(Int64(b - UInt8(ascii: "0")))
            // Counters are u64 on the wire; clamp rather than fail on values past Int64.max.
            value = (o1 || o2) ? Int64.max : s
            digits += 1
        }
        guard digits > 0 else { throw .malformedReply("\(what) is empty") }
        return negative ? -value : value
    }

    static func parseKey(_ bytes: Bytes, _ what: String) throws(WireGuardError) -> WireGuardKey {
        guard let k = WireGuardKey.parseHex(bytes) else { throw .malformedReply("\(what) is not 64 hex digits") }
        return k
    }
}
