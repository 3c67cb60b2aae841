import Foundation
import Logging
import MeshDNS
import MeshNet
import NIOCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Runs a server on 127.0.0.1 with a random port for the duration of `body`, then cancels it and checks
/// that `run()` returned cleanly.
func withServer(zone: MeshDNSZone, _ body: (MeshDNSServer, Int) async throws -> Void) async throws {
    try await withServer(zone: zone, configure: { _ in }, body)
}

/// Like ``withServer(zone:_:)``, with a chance to change the configuration first.
func withServer(zone: MeshDNSZone, configure: (inout MeshDNSServerConfiguration) -> Void,
                _ body: (MeshDNSServer, Int) async throws -> Void) async throws {
    var config = MeshDNSServerConfiguration(listenAddresses: [IPAddress("127.0.0.1")!], port: 0)
    configure(&config)
    let server = MeshDNSServer(zone: zone, configuration: config, logger: quietLogger)
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await server.run() }
        let addresses = try await server.listeningAddresses()
        let port = try #require(addresses.first?.port)
        try await body(server, port)
        group.cancelAll()
        // run() must return (not throw) after a requested stop.
        try await group.waitForAll()
    }
    #expect(!server.status().serving)
}

/// Runs blocking work on a thread of its own. Test code that blocks (waiting for `dig`, reading a socket)
/// must not sit on the few threads of Swift's cooperative pool, or every other task, including the
/// servers' `run()` and the test's own timers, stalls behind it.
func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}

/// Runs `dig` with the given arguments, off the cooperative pool, and returns what it printed.
func dig(_ arguments: [String]) async throws -> String {
    try await offPool { try digBlocking(arguments) }
}

private func digBlocking(_ arguments: [String]) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/dig")
    process.arguments = ["+tries=1", "+time=3"] + arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return String(decoding: data, as: UTF8.self)
}

/// `dig +short` lines for one query.
func digShort(port: Int, _ name: String, _ type: String, _ extra: [String] = []) async throws -> [String] {
    try await dig(["@127.0.0.1", "-p", "\(port)", "+short"] + extra + [name, type])
        .split(separator: "\n").map(String.init)
}

/// A blocking IPv4 socket on loopback with receive timeouts, for sending raw bytes at the server.
/// One thread may send while another receives (the descriptor never changes), hence `@unchecked Sendable`.
final class RawSocket: @unchecked Sendable {
    let fd: Int32
    let isTCP: Bool

    private init(fd: Int32, isTCP: Bool) {
        self.fd = fd
        self.isTCP = isTCP
    }

    deinit { close(fd) }

    static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port)).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return address
    }

    static func udp(receiveTimeoutMillis: Int = 5000) throws -> RawSocket {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw TestIOError() }
        let s = RawSocket(fd: fd, isTCP: false)
        s.setTimeout(millis: receiveTimeoutMillis)
        var size: Int32 = 4 << 20
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        return s
    }

    static func tcp(port: Int, receiveTimeoutMillis: Int = 5000) throws -> RawSocket {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestIOError() }
        let s = RawSocket(fd: fd, isTCP: true)
        s.setTimeout(millis: receiveTimeoutMillis)
        var address = loopback(port: port)
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard rc == 0 else { throw TestIOError() }
        return s
    }

    func setTimeout(millis: Int) {
        var tv = timeval(tv_sec: millis / 1000, tv_usec: (millis % 1000) * 1000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Sends one datagram to 127.0.0.1:port.
    func send(_ bytes: [UInt8], toPort port: Int) {
        var address = Self.loopback(port: port)
        _ = bytes.withUnsafeBytes { raw in
            withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, raw.baseAddress, raw.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        }
    }

    /// Writes all bytes on a TCP socket; false if the peer closed.
    @discardableResult
    func write(_ bytes: [UInt8]) -> Bool {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            sent += n
        }
        return true
    }

    /// One datagram, or nil on timeout.
    func receiveDatagram() -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 65536)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        return n >= 0 ? Array(buffer[0..<n]) : nil
    }

    /// Exactly `count` bytes from a TCP stream, or nil on EOF, error or timeout.
    func readExactly(_ count: Int) -> [UInt8]? {
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: count)
        while out.count < count {
            let want = count - out.count
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, want, 0) }
            if n <= 0 { return nil }
            out += buffer[0..<n]
        }
        return out
    }

    /// One length-prefixed DNS message from a TCP stream.
    func readFrame() -> [UInt8]? {
        guard let prefix = readExactly(2) else { return nil }
        return readExactly(Int(prefix[0]) << 8 | Int(prefix[1]))
    }

    /// True when the peer closes the connection (EOF or reset) within the receive timeout.
    func isClosedByPeer() -> Bool {
        var byte: UInt8 = 0
        let n = recv(fd, &byte, 1, 0)
        return n == 0 || (n < 0 && errno == ECONNRESET)
    }
}

/// Prefixes a message with its two-byte length for TCP.
func framed(_ message: [UInt8]) -> [UInt8] {
    [UInt8(message.count >> 8), UInt8(message.count & 0xff)] + message
}

/// A small deterministic generator, so a failing fuzz run can be replayed from its seed.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}
