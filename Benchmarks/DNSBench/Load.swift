// A small UDP load generator that records the latency of every query, because dnsperf 2.10 reports only
// the mean and standard deviation, and its per-query (-v) output slows it enough to distort the tail.
import MeshDNS

#if canImport(Glibc)
import Glibc
#endif

/// Nanoseconds on the monotonic clock.
func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Sends queries from `queryLines` over one connected UDP socket and matches replies by id.
///
/// With `rate > 0` queries go out on a fixed schedule whatever the replies do (open loop), so queueing
/// in the server shows up as latency instead of as a lower send rate; `outstanding` then only bounds
/// memory. With `rate == 0` it keeps `outstanding` queries in flight and measures the highest rate.
/// Between sends it sleeps in `ppoll`, so it needs little CPU beyond the system calls themselves.
func runLoad(address: String, port: UInt16, records: Int, rate: Int, seconds: Double, outstanding: Int) -> String {
    let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
    precondition(fd >= 0, "socket failed")
    defer { close(fd) }
    var size: Int32 = 8 << 20
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
    var server = sockaddr_in()
    server.sin_family = sa_family_t(AF_INET)
    server.sin_port = port.bigEndian
    server.sin_addr.s_addr = inet_addr(address)
    let connected = withUnsafePointer(to: &server) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    precondition(connected == 0, "connect failed")
    _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)

    var queries: [[UInt8]] = []
    for line in queryLines(records: records, count: 8192) {
        let parts = line.split(separator: " ")
        guard let name = try? DNSName(String(parts[0])) else { continue }
        queries.append(DNSMessage(header: DNSHeader(id: 0, recursionDesired: true),
                                  questions: [DNSQuestion(name: name, type: parts[1] == "A" ? .a : .aaaa)]).serialized())
    }

    var sentAt = [UInt64](repeating: 0, count: 65536)
    var latencies: [UInt64] = []
    latencies.reserveCapacity(rate > 0 ? Int(Double(rate) * seconds * 1.1) : 4_000_000)
    var sent = 0, inFlight = 0, received = 0, stale = 0
    var buffer = [UInt8](repeating: 0, count: 4096)
    let interval = rate > 0 ? 1_000_000_000 / UInt64(rate) : 0
    let start = monotonicNanos()
    let sendUntil = start + UInt64(seconds * 1e9)
    var nextSend = start

    func drain(_ now: inout UInt64) {
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 2 { return }
            now = monotonicNanos()
            let id = Int(buffer[0]) << 8 | Int(buffer[1])
            if sentAt[id] != 0 {
                latencies.append(now - sentAt[id])
                sentAt[id] = 0
                inFlight -= 1
                received += 1
            } else {
                stale += 1
            }
        }
    }

    var now = start
    while now < sendUntil {
        now = monotonicNanos()
        while now < sendUntil, inFlight < outstanding, rate == 0 || nextSend <= now {
            let id = sent & 0xffff
            if sentAt[id] != 0 { inFlight -= 1 }  // an earlier query with this id was lost
            var query = queries[sent % queries.count]
            query[0] = UInt8(id >> 8)
            query[1] = UInt8(id & 0xff)
            let n = query.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 { break }
            sentAt[id] = monotonicNanos()
            sent += 1
            inFlight += 1
            nextSend += interval
        }
        drain(&now)
        // Sleep in the kernel until a reply arrives or the next send is due, rather than spinning: on a
        // virtual machine a spinning vCPU can slow the server's vCPU and distort what is measured.
        now = monotonicNanos()
        let wait: UInt64 = rate > 0 ? (nextSend > now ? nextSend - now : 0) : (inFlight >= outstanding ? 1_000_000 : 0)
        if wait > 0 {
            // select() because its microsecond timeout is a high-resolution timer (poll's is milliseconds).
            var readable = fd_set()
            withUnsafeMutableBytes(of: &readable) { $0[Int(fd) / 8] |= UInt8(1 << (fd % 8)) }
            var timeout = timeval(tv_sec: Int(wait / 1_000_000_000), tv_usec: Int(wait % 1_000_000_000 / 1000))
            _ = select(fd + 1, &readable, nil, nil, &timeout)
        }
    }
    let sendEnd = monotonicNanos()
    // Give the last answers a moment to arrive.
    let grace = sendEnd + 500_000_000
    while inFlight > 0, now < grace { drain(&now); now = monotonicNanos() }

    latencies.sort()
    func pct(_ p: Double) -> String {
        guard !latencies.isEmpty else { return "n/a" }
        let i = min(latencies.count - 1, Int((Double(latencies.count) * p / 100).rounded(.up)) - 1)
        let micros = Double(latencies[max(0, i)]) / 1000
        return String(Int(micros)) + " us"
    }
    let elapsed = Double(sendEnd - start) / 1e9
    let mode = rate > 0 ? "open loop at \(rate)/s" : "closed loop, \(outstanding) in flight"
    return "load: \(mode): sent \(sent), answered \(received) (\(sent - received) lost), "
        + "\(Int(Double(received) / elapsed)) answers/s; latency p50 \(pct(50)), p90 \(pct(90)), p99 \(pct(99)), "
        + "p99.9 \(pct(99.9)), max \(pct(100))"
}

/// Echoes every datagram back with one blocking `recvfrom`/`sendto` pair and no other work: the round trip
/// through the kernel and the machine's scheduler that any UDP server pays. Measuring it with the same
/// load generator separates the machine's latency from the DNS server's. Runs until killed.
func runEcho(address: String, port: UInt16) -> Never {
    let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
    precondition(fd >= 0, "socket failed")
    var local = sockaddr_in()
    local.sin_family = sa_family_t(AF_INET)
    local.sin_port = port.bigEndian
    local.sin_addr.s_addr = inet_addr(address)
    let bound = withUnsafePointer(to: &local) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    precondition(bound == 0, "bind failed")
    var buffer = [UInt8](repeating: 0, count: 4096)
    var peer = sockaddr_storage()
    while true {
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let n = buffer.withUnsafeMutableBytes { raw in
            withUnsafeMutablePointer(to: &peer) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, raw.baseAddress, raw.count, 0, $0, &length) }
            }
        }
        guard n > 0 else { continue }
        _ = buffer.withUnsafeBytes { raw in
            withUnsafePointer(to: &peer) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, raw.baseAddress, n, 0, $0, length) }
            }
        }
    }
}
