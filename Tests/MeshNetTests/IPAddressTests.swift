import MeshNet
import Testing

@Suite(.timeLimit(.minutes(2))) struct IPAddressTests {
    @Test(arguments: ["0.0.0.0", "100.64.0.1", "255.255.255.255", "10.1.2.3", "0.10.0.1"])
    func ipv4RoundTrip(_ text: String) throws {
        let a = try #require(IPv4Address(text))
        #expect(a.description == text)
    }

    @Test(arguments: ["", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1..2.3", "a.b.c.d", " 1.2.3.4",
                      "1.2.3.", "10.0.0.01", "1.2.3.4:5", "1.2.3.4/8"])
    func ipv4Rejects(_ text: String) {
        #expect(IPv4Address(text) == nil)
    }

    @Test(arguments: [
        ("::", "::"), ("::1", "::1"), ("fd00:0:0::1", "fd00::1"), ("FD12:3456:789A:0:0:0:0:5", "fd12:3456:789a::5"),
        ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"), ("1:0:0:0:0:0:0:0", "1::"), ("::ffff:1.2.3.4", "::ffff:102:304"),
        ("1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"), ("1:0:3:4:5:6:7:8", "1:0:3:4:5:6:7:8"),
    ])
    func ipv6Canonical(_ input: String, _ canonical: String) throws {
        let a = try #require(IPv6Address(input))
        #expect(a.description == canonical)
        #expect(IPv6Address(a.description) == a)
        #expect(IPv6Address(bytes: a.bytes) == a)
    }

    @Test(arguments: ["", ":", ":::", "1::2::3", "12345::", "1:2:3:4:5:6:7:8:9", "g::1", "1:2:3:4:5:6:7", "fe80::1%eth0",
                      ":1::", "1:::2", "1::2:", "1:2:3:4:5:6:7:", "+1::", "1.2.3.4::", "::1.2.3", "::01.2.3.4", "1:2:3:4:5:6:7:1.2.3.4",
                      "1::2:3:4:5:6:7:8", "::ffff:1.2.3.4:5", "1:2:3:4:5:6:7:8::", "::ü",
                      "::1::", ":1", "1:", "1"])
    func ipv6Rejects(_ text: String) {
        #expect(IPv6Address(text) == nil)
    }

    @Test(arguments: [("1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:102:304"), ("1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"),
                      ("::2:3:4:5:6:7:8", "0:2:3:4:5:6:7:8"), ("1::8", "1::8"), ("0:0:0:0:0:0:0:0", "::"),
                      ("64:ff9b::198.18.0.1", "64:ff9b::c612:1"), ("fe80::1:2:3:4:5:6", "fe80:0:1:2:3:4:5:6"), ("FD00::ABCD", "fd00::abcd")])
    func ipv6Edges(_ input: String, _ canonical: String) throws {
        #expect(try #require(IPv6Address(input)).description == canonical)
    }

    /// Every address prints as text that parses back to it (random addresses, and IPv6 ones with
    /// zero runs of every length at every place).
    @Test func textRoundTrips() throws {
        var g = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            let a = IPv4Address(UInt32.random(in: 0...UInt32.max, using: &g))
            #expect(IPv4Address(a.description) == a)
            var groups = (0..<8).map { _ in UInt16.random(in: 0...UInt16.max, using: &g) }
            let zeroStart = Int.random(in: 0..<8, using: &g)
            for k in zeroStart..<min(8, zeroStart + Int.random(in: 0...8, using: &g)) { groups[k] = 0 }
            let v6 = IPv6Address(high: groups[0..<4].reduce(0) { $0 << 16 | UInt64($1) }, low: groups[4...].reduce(0) { $0 << 16 | UInt64($1) })
            #expect(IPv6Address(v6.description) == v6)
            #expect(IPv6Address(v6.description.uppercased()) == v6)
            #expect(IPPrefix("\(v6)/128") == IPPrefix(host: .v6(v6)))
            #expect(HostPort("[\(v6)]:51820")?.address == .v6(v6))
        }
    }

    @Test func prefixContainment() throws {
        let p = try #require(IPPrefix("100.64.0.0/16"))
        #expect(p.contains(IPAddress("100.64.255.255")!))
        #expect(!p.contains(IPAddress("100.65.0.0")!))
        #expect(!p.contains(IPAddress("fd00::1")!))
        #expect(p.contains(IPPrefix("100.64.16.0/20")!))
        #expect(!p.contains(IPPrefix("100.0.0.0/8")!))
        #expect(p.overlaps(IPPrefix("100.0.0.0/8")!))
        #expect(!p.overlaps(IPPrefix("100.65.0.0/16")!))
        #expect(IPPrefix("100.64.3.7/16")!.network == p)
        let v6 = try #require(IPPrefix("fd12:3456:789a::/48"))
        #expect(v6.contains(IPAddress("fd12:3456:789a:ffff::1")!))
        #expect(!v6.contains(IPAddress("fd12:3456:789b::1")!))
        #expect(IPPrefix("fd12:3456:789a:1::9/64")!.network.description == "fd12:3456:789a:1::/64")
        #expect(IPPrefix("10.0.0.1")!.length == 32)
        #expect(IPPrefix("10.0.0.0/33") == nil)
        #expect(IPPrefix("10.0.0.0/") == nil)
        #expect(IPPrefix("::/129") == nil)
        #expect(IPPrefix("10.0.0.0/8/8") == nil)
        #expect(IPPrefix("10.0.0.0/1a") == nil)
        #expect(IPPrefix("10.0.0.0/1000") == nil)
        #expect(IPPrefix("/8") == nil)
        #expect(IPPrefix("fd00::/64")?.length == 64)
    }

    @Test(arguments: [("1.2.3.4:51820", "1.2.3.4", 51820), ("[fd00::1]:53", "fd00::1", 53), ("node-1.example.com:443", "node-1.example.com", 443),
                      ("\(String(repeating: "a", count: 63)).B-2.c:65535", "\(String(repeating: "a", count: 63)).B-2.c", 65535)])
    func hostPortParses(_ text: String, _ host: String, _ port: Int) throws {
        let hp = try #require(HostPort(text))
        #expect(hp.host == host)
        #expect(Int(hp.port) == port)
        #expect(hp.description == text)
    }

    @Test(arguments: ["1.2.3.4", "1.2.3.4:0", "1.2.3.4:65536", "fd00::1:53", "[fd00::1]", "host:", ":80", "-bad.com:1", "a b:1", "[zz::1]:5",
                      "bad-.com:1", "a..b:1", "a.:1", "[fd00::1]x53", "[fd00::1:53", "1.2.3.4:+80", "1.2.3.4:080000", "ünï.com:1",
                      "\(String(repeating: "a", count: 64)).com:1"])
    func hostPortRejects(_ text: String) {
        #expect(HostPort(text) == nil)
    }
}

@Suite(.timeLimit(.minutes(2))) struct SummarizeTests {
    @Test func ipv4DeviceRangeOfASlash16() {
        // Hosts 4096...65535 of 100.64.0.0/16: the /16 minus its first /20.
        let r = IPPrefix.summarize(IPv4Address("100.64.16.0")!, IPv4Address("100.64.255.255")!)
        #expect(r.map(\.description) == ["100.64.16.0/20", "100.64.32.0/19", "100.64.64.0/18", "100.64.128.0/17"])
    }

    @Test func ipv4Odd() {
        let r = IPPrefix.summarize(IPv4Address("10.0.0.1")!, IPv4Address("10.0.0.6")!)
        #expect(r.map(\.description) == ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"])
        #expect(IPPrefix.summarize(IPv4Address("0.0.0.0")!, IPv4Address("255.255.255.255")!).map(\.description) == ["0.0.0.0/0"])
        #expect(IPPrefix.summarize(IPv4Address("10.0.0.6")!, IPv4Address("10.0.0.1")!).isEmpty)
    }

    @Test func ipv6DeviceRange() {
        let base = IPv6Address("fd12:3456:789a::")!
        let r = IPPrefix.summarize(base.adding(4096), base.adding(65535))
        #expect(r.map(\.description) == ["fd12:3456:789a::1000/116", "fd12:3456:789a::2000/115", "fd12:3456:789a::4000/114", "fd12:3456:789a::8000/113"])
    }

    @Test(arguments: 0..<200)
    func coversExactlyTheRange(_ seed: Int) {
        var g = SystemRandomNumberGenerator()
        let a = UInt32.random(in: 0...UInt32.max, using: &g) >> UInt32.random(in: 0...31, using: &g)
        let b = a &+ UInt32.random(in: 0...5000, using: &g)
        guard b >= a else { return }
        let r = IPPrefix.summarize(IPv4Address(a), IPv4Address(b))
        var covered: UInt64 = 0
        for p in r {
            covered += UInt64(1) << UInt64(32 - p.length)
            #expect(p.isNetwork)
        }
        #expect(covered == UInt64(b - a) + 1)
        #expect(r.first.map { $0.contains(.v4(IPv4Address(a))) } == true)
        #expect(r.last.map { $0.contains(.v4(IPv4Address(b))) } == true)
        for (x, y) in zip(r, r.dropFirst()) { #expect(!x.overlaps(y)) }
        _ = seed
    }
}
