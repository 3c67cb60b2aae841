import MeshNet
import Testing

@Suite struct IPAddressTests {
    @Test(arguments: ["0.0.0.0", "100.64.0.1", "255.255.255.255", "10.1.2.3"])
    func ipv4RoundTrip(_ text: String) throws {
        let a = try #require(IPv4Address(text))
        #expect(a.description == text)
    }

    @Test(arguments: ["", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1..2.3", "a.b.c.d", " 1.2.3.4"])
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

    @Test(arguments: ["", ":", ":::", "1::2::3", "12345::", "1:2:3:4:5:6:7:8:9", "g::1", "1:2:3:4:5:6:7", "fe80::1%eth0"])
    func ipv6Rejects(_ text: String) {
        #expect(IPv6Address(text) == nil)
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
    }

    @Test(arguments: [("1.2.3.4:51820", "1.2.3.4", 51820), ("[fd00::1]:53", "fd00::1", 53), ("node-1.example.com:443", "node-1.example.com", 443)])
    func hostPortParses(_ text: String, _ host: String, _ port: Int) throws {
        let hp = try #require(HostPort(text))
        #expect(hp.host == host)
        #expect(Int(hp.port) == port)
        #expect(hp.description == text)
    }

    @Test(arguments: ["1.2.3.4", "1.2.3.4:0", "1.2.3.4:65536", "fd00::1:53", "[fd00::1]", "host:", ":80", "-bad.com:1", "a b:1", "[zz::1]:5"])
    func hostPortRejects(_ text: String) {
        #expect(HostPort(text) == nil)
    }
}
