import Foundation
import MeshNet
import Testing
@testable import MeshWireGuard

@Suite("WireGuardKey", .timeLimit(.minutes(10)))
struct KeyTests {
    @Test func base64AndHexRoundTrip() throws {
        let text = "2Ec4bQ9I7Fy4n9TAyo9YdrBXxUhMVqbeVGjGOqt1D3U="
        let key = try #require(WireGuardKey(base64: text))
        #expect(key.base64 == text)
        #expect(key.description == text)
        #expect(WireGuardKey(hex: key.hex) == key)
        #expect(WireGuardKey(hex: key.hex.uppercased()) == key)
        #expect(key.bytes.count == 32)
        #expect(WireGuardKey(bytes: key.bytes) == key)
    }

    @Test func rejectsMalformedText() {
        #expect(WireGuardKey(base64: "") == nil)
        #expect(WireGuardKey(base64: "2Ec4bQ9I7Fy4n9TAyo9YdrBXxUhMVqbeVGjGOqt1D3U") == nil)  // no padding
        #expect(WireGuardKey(base64: "2Ec4bQ9I7Fy4n9TAyo9YdrBXxUhMVqbeVGjGOqt1D3V=") == nil)  // non-zero spare bits
        #expect(WireGuardKey(base64: "2Ec4bQ9I7Fy4n9TAyo9YdrBXxUhMVqbeVGjGOqt1D3*=") == nil)
        #expect(WireGuardKey(base64: "AAAA") == nil)
        #expect(WireGuardKey(hex: String(repeating: "0", count: 63)) == nil)
        #expect(WireGuardKey(hex: String(repeating: "g", count: 64)) == nil)
        #expect(WireGuardKey(bytes: [UInt8](repeating: 1, count: 31)) == nil)
    }

    @Test func zeroKey() {
        #expect(WireGuardKey.zero.isZero)
        #expect(WireGuardKey.zero.base64 == "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
        #expect(WireGuardKey(hex: String(repeating: "0", count: 64)) == .zero)
    }

    /// RFC 7748 section 6.1 test vectors.
    @Test func x25519MatchesRFC7748() throws {
        let alice = try #require(WireGuardKey(hex: "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
        #expect(alice.publicKeyOfPrivate.hex == "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        let bob = try #require(WireGuardKey(hex: "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"))
        #expect(bob.publicKeyOfPrivate.hex == "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    }

    @Test(.enabled(if: toolsRun("wg"), "needs wg")) func x25519MatchesWgPubkey() async throws {
        try requireTools("wg")
        for _ in 0..<8 {
            // Not `wg genkey`: writing a private key to a non-pipe makes it add a warning to the output.
            let priv = randomKey()
            let file = FileManager.default.temporaryDirectory.appendingPathComponent("mwg-key-\(UUID().uuidString)")
            try (priv.base64 + "\n").write(to: file, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(at: file) }
            let pub = try await sh(["sh", "-c", "wg pubkey < \(file.path)"]).output.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(priv.publicKeyOfPrivate.base64 == pub)
        }
    }
}

@Suite("UAPI protocol", .timeLimit(.minutes(10)))
struct UAPIProtocolTests {
    @Test func encodesEverySettingInProtocolOrder() throws {
        let peer = randomKey(), psk = randomKey(), priv = randomKey()
        let config = WireGuardConfig(privateKey: priv, listenPort: 51820, firewallMark: 0x42, replacePeers: true, peers: [
            WireGuardPeerConfig(publicKey: peer, updateOnly: true, presharedKey: psk, endpoint: HostPort("[fd00::1]:51820"),
                                persistentKeepaliveInterval: 25, replaceAllowedIPs: true,
                                allowedIPs: [IPPrefix("100.64.0.2/32")!, IPPrefix("fd00::2/128")!]),
            .removing(psk),
        ])
        let text = String(decoding: UAPIProtocol.encodeSet(config), as: UTF8.self)
        #expect(text == """
            set=1
            private_key=\(priv.hex)
            listen_port=51820
            fwmark=66
            replace_peers=true
            public_key=\(peer.hex)
            update_only=true
            preshared_key=\(psk.hex)
            endpoint=[fd00::1]:51820
            persistent_keepalive_interval=25
            replace_allowed_ips=true
            allowed_ip=100.64.0.2/32
            allowed_ip=fd00::2/128
            public_key=\(psk.hex)
            remove=true


            """)
    }

    @Test func nilFieldsAreLeftOut() {
        let text = String(decoding: UAPIProtocol.encodeSet(WireGuardConfig()), as: UTF8.self)
        #expect(text == "set=1\n\n")
    }

    @Test func parsesGetReply() throws {
        let priv = try #require(WireGuardKey(hex: "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
        let p1 = randomKey(), p2 = randomKey(), psk = randomKey()
        let reply = """
            private_key=\(priv.hex)
            listen_port=51820
            fwmark=7
            public_key=\(p1.hex)
            preshared_key=\(psk.hex)
            protocol_version=1
            endpoint=198.18.0.2:51821
            last_handshake_time_sec=1700000000
            last_handshake_time_nsec=42
            tx_bytes=100
            rx_bytes=200
            persistent_keepalive_interval=25
            allowed_ip=100.64.0.2/32
            allowed_ip=fd00::2/128
            public_key=\(p2.hex)
            preshared_key=\(String(repeating: "0", count: 64))
            protocol_version=1
            endpoint=[fe80::1%eth0]:7
            last_handshake_time_sec=0
            last_handshake_time_nsec=0
            tx_bytes=0
            rx_bytes=0
            persistent_keepalive_interval=0
            errno=0


            """
        let d = try UAPIProtocol.parseGetReply(Array(reply.utf8), device: "wg0")
        #expect(d.privateKey == priv)
        #expect(d.publicKey?.hex == "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        #expect(d.listenPort == 51820)
        #expect(d.firewallMark == 7)
        #expect(d.backend == .userspace)
        #expect(d.peers.count == 2)
        #expect(d.peers[0] == WireGuardPeer(publicKey: p1, presharedKey: psk, endpoint: HostPort("198.18.0.2:51821"),
                                            persistentKeepaliveInterval: 25,
                                            lastHandshake: WireGuardTimestamp(seconds: 1_700_000_000, nanoseconds: 42),
                                            receiveBytes: 200, transmitBytes: 100,
                                            allowedIPs: [IPPrefix("100.64.0.2/32")!, IPPrefix("fd00::2/128")!]))
        #expect(d.peers[1].presharedKey == nil)
        #expect(d.peers[1].endpoint == HostPort("[fe80::1]:7"))
        #expect(d.peers[1].lastHandshake.isNever)
        #expect(d.peers[1].allowedIPs.isEmpty)
    }

    @Test func mapsErrnoReplies() {
        #expect(throws: WireGuardError.invalidArgument(errno: EINVAL, operation: "set wg0")) {
            try UAPIProtocol.parseSetReply(Array("errno=-22\n\n".utf8), device: "wg0")
        }
        #expect(throws: WireGuardError.uapi(errno: EADDRINUSE, operation: "set wg0")) {
            try UAPIProtocol.parseSetReply(Array("errno=-98\n\n".utf8), device: "wg0")
        }
        #expect(throws: WireGuardError.invalidArgument(errno: EPROTO, operation: "get wg0")) {
            _ = try UAPIProtocol.parseGetReply(Array("errno=-71\n\n".utf8), device: "wg0")
        }
        #expect(throws: Never.self) { try UAPIProtocol.parseSetReply(Array("errno=0\n\n".utf8), device: "wg0") }
    }

    @Test func rejectsMalformedReplies() {
        #expect(throws: WireGuardError.self) { _ = try UAPIProtocol.parseGetReply(Array("listen_port=x\nerrno=0\n\n".utf8), device: "d") }
        #expect(throws: WireGuardError.self) { _ = try UAPIProtocol.parseGetReply(Array("garbage\n\n".utf8), device: "d") }
        #expect(throws: WireGuardError.self) { _ = try UAPIProtocol.parseGetReply(Array("public_key=12\nerrno=0\n\n".utf8), device: "d") }
        #expect(throws: WireGuardError.self) { _ = try UAPIProtocol.parseGetReply(Array("listen_port=1\n\n".utf8), device: "d") }
        #expect(throws: WireGuardError.self) { try UAPIProtocol.parseSetReply(Array("\n".utf8), device: "d") }
    }

    /// A reply read through a small buffer, in pieces of any size (a line split anywhere), parses to
    /// exactly what the whole reply does; the activity reading is the same without allowed IPs.
    @Test func streamedReplyParsesLikeTheWholeReply() throws {
        var lines = ["private_key=\(WireGuardKey(bytes: [UInt8](repeating: 3, count: 32))!.hex)", "listen_port=51820"]
        for i in 0..<300 {
            lines.append("public_key=\(WireGuardKey(bytes: [UInt8](repeating: UInt8(i % 250 + 1), count: 31) + [UInt8(i / 250)])!.hex)")
            if i % 3 == 0 { lines.append("endpoint=198.18.\(i / 256).\(i % 256):51820") }
            lines.append("last_handshake_time_sec=\(i % 5 == 0 ? 0 : 1_700_000_000 + i)")
            lines.append("last_handshake_time_nsec=\(i)")
            lines.append("rx_bytes=\(i * 1000)")
            lines.append("tx_bytes=\(i * 7)")
            lines.append("persistent_keepalive_interval=25")
            for a in 0..<(i % 4) { lines.append("allowed_ip=100.64.\(a).\(i % 256)/32") }
        }
        lines.append("errno=0")
        let reply = Array((lines.joined(separator: "\n") + "\n\n").utf8)
        let whole = try UAPIProtocol.parseGetReply(reply, device: "wg0")
        #expect(whole.peers.count == 300)
        var rng = SystemRandomNumberGenerator()
        for keepsAllowedIPs in [true, false] {
            for _ in 0..<20 {
                var parser = UAPIProtocol.GetReplyParser(device: "wg0", keepsAllowedIPs: keepsAllowedIPs)
                // What the backend does: append what arrived, parse the complete lines, keep the rest.
                var pending: [UInt8] = []
                var offset = 0
                var ended = false
                while !ended {
                    #expect(offset < reply.count, "the reply ended without its blank line being seen")
                    if offset >= reply.count { break }
                    let n = min(Int.random(in: 1...200, using: &rng), reply.count - offset)
                    pending += reply[offset..<(offset + n)]
                    offset += n
                    let used: Int
                    (used, ended) = try pending.withUnsafeBufferPointer { buf throws(WireGuardError) in
                        try UAPIProtocol.forEachCompleteLine(buf) { k, v throws(WireGuardError) in try parser.line(k, v) }
                    }
                    pending.removeFirst(used)
                }
                #expect(offset == reply.count && pending.isEmpty)
                if keepsAllowedIPs {
                    #expect(try parser.device() == whole)
                } else {
                    #expect(try parser.activityReading() == WireGuardActivityReading(whole))
                }
            }
        }
        // A partial line is left for the next read; the blank line ends the message.
        let partial = try Array("listen_port=1\nfwm".utf8).withUnsafeBufferPointer { buf throws(WireGuardError) in
            try UAPIProtocol.forEachCompleteLine(buf) { _, _ in }
        }
        #expect(partial.used == 14 && !partial.ended)
        var parser = UAPIProtocol.GetReplyParser(device: "d", keepsAllowedIPs: false)
        #expect(throws: WireGuardError.self) {
            _ = try Array("errno=0\nlisten_port=1\n\n".utf8).withUnsafeBufferPointer { buf throws(WireGuardError) in
                try UAPIProtocol.forEachCompleteLine(buf) { k, v throws(WireGuardError) in try parser.line(k, v) }
            }
        }
    }

    /// The reply reader takes out the lines an activity reading does not use as they arrive over a
    /// socket in writes of any size, across its 1 MiB pieces, and counts the peers; without a filter
    /// it hands back every byte. A line longer than a piece is an error, not a hang.
    @Test func replyReaderDropsLinesAcrossPieces() throws {
        var lines = ["private_key=\(WireGuardKey(bytes: [UInt8](repeating: 3, count: 32))!.hex)", "listen_port=51820"]
        for i in 0..<8_000 {
            lines.append("public_key=\(WireGuardKey(bytes: [UInt8](repeating: UInt8(i % 250 + 1), count: 30) + [UInt8(i / 256), UInt8(i % 256)])!.hex)")
            lines.append("preshared_key=\(String(repeating: "0", count: 64))")
            lines.append("protocol_version=1")
            if i % 3 == 0 { lines.append("endpoint=198.18.\(i / 256).\(i % 256):51820") }
            lines.append("last_handshake_time_sec=\(1_700_000_000 + i)")
            lines.append("last_handshake_time_nsec=\(i)")
            lines.append("tx_bytes=\(i * 7)")
            lines.append("rx_bytes=\(i * 1000)")
            lines.append("persistent_keepalive_interval=25")
            for a in 0..<(i % 3) { lines.append("allowed_ip=100.64.\(a).\(i % 256)/32") }
        }
        lines.append("errno=0")
        let reply = Array((lines.joined(separator: "\n") + "\n\n").utf8)
        let dropped = ["allowed_ip=", "preshared_key=", "protocol_version=", "persistent_keepalive_interval="]
        let kept = Array((lines.filter { line in !dropped.contains { line.hasPrefix($0) } }.joined(separator: "\n") + "\n\n").utf8)
        #expect(reply.count > 2 * ReplyPieces.pieceSize && kept.count > ReplyPieces.pieceSize && kept.count < reply.count * 2 / 3)

        func readBack(_ bytes: [UInt8], drops: (@Sendable (UnsafeRawPointer, Int) -> Bool)?) throws -> (bytes: [UInt8], peers: Int) {
            var fds: [Int32] = [0, 0]
            #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)
            let writer = fds[1]
            let payload = bytes
            let done = DispatchSemaphore(value: 0)
            Thread.detachNewThread {
                var rng = SystemRandomNumberGenerator()
                var offset = 0
                while offset < payload.count {
                    let n = min(Int.random(in: 1...70_000, using: &rng), payload.count - offset)
                    let written = payload[offset..<(offset + n)].withUnsafeBytes { send(writer, $0.baseAddress, n, Int32(MSG_NOSIGNAL)) }
                    if written <= 0 { break }
                    offset += written
                }
                close(writer)
                done.signal()
            }
            defer { close(fds[0]); done.wait() }
            let pieces = ReplyPieces(drops: drops)
            try pieces.read(fds[0], "test")
            var out: [UInt8] = []
            var window = [UInt8](repeating: 0, count: 4_096)
            while true {
                let n = window.withUnsafeMutableBufferPointer { pieces.take(into: $0) }
                if n == 0 { break }
                out += window[0..<n]
            }
            return (out, pieces.peerLines)
        }
        for _ in 0..<3 {
            let filtered = try readBack(reply, drops: UAPIProtocol.carriesNoActivity)
            #expect(filtered.bytes == kept && filtered.peers == 8_000)
            let whole = try readBack(reply, drops: nil)
            #expect(whole.bytes == reply && whole.peers == 8_000)
        }
        let tooLong = Array(("listen_port=" + String(repeating: "1", count: ReplyPieces.pieceSize) + "\nerrno=0\n\n").utf8)
        #expect(throws: WireGuardError.self) { _ = try readBack(tooLong, drops: nil) }
    }

    @Test func completeness() {
        #expect(!UAPIProtocol.isComplete(Array("errno=0\n".utf8)))
        #expect(UAPIProtocol.isComplete(Array("errno=0\n\n".utf8)))
    }

    @Test func configValidationRejectsNames() {
        let config = WireGuardConfig(peers: [WireGuardPeerConfig(publicKey: randomKey(), endpoint: HostPort("vpn.example.com:51820"))])
        #expect(throws: WireGuardError.self) { try config.validate() }
    }
}

@Suite("Netlink messages", .timeLimit(.minutes(10)))
struct NetlinkMessageTests {
    let family: UInt16 = 0x1c

    @Test func smallConfigIsOneMessage() throws {
        let config = WireGuardConfig(privateKey: randomKey(), listenPort: 1, firewallMark: 2, replacePeers: true,
                                     peers: (0..<3).map { syntheticPeer($0, key: randomKey()) })
        let messages = try WireGuardNetlink.setDeviceMessages(family: family, device: "wg0", config: config)
        #expect(messages.count == 1)
        let s = try WireGuardNetlink.summarize(messages[0])
        #expect(s.deviceFlags == 1 && s.hasPrivateKey && s.hasListenPort && s.hasFirewallMark)
        #expect(s.peers.map(\.key) == config.peers.map(\.publicKey))
        #expect(s.peers.allSatisfy { $0.flags == 2 && $0.allowedIPs == 2 })  // REPLACE_ALLOWEDIPS
    }

    @Test func emptyConfigStillSendsOneMessage() throws {
        let messages = try WireGuardNetlink.setDeviceMessages(family: family, device: "wg0", config: WireGuardConfig(listenPort: 9))
        #expect(messages.count == 1)
        #expect(try WireGuardNetlink.summarize(messages[0]).hasListenPort)
    }

    /// Many peers, each with many prefixes, in small messages: every rule of the split is checked and
    /// the messages, read back as a dump would be, reproduce the configuration exactly.
    @Test(arguments: [512, 1024, 4096, 32 * 1024])
    func splitsPeersAndAllowedIPsAcrossMessages(maxSize: Int) throws {
        var peers = (0..<300).map { syntheticPeer($0, key: randomKey()) }
        // One peer with far more prefixes than fit in any message.
        peers[7].allowedIPs = (0..<700).map { IPPrefix(.v4(IPv4Address(10, 200, UInt8($0 / 256), UInt8($0 % 256))), length: 32)! }
        peers[8].updateOnly = true
        peers[9] = .removing(peers[9].publicKey)
        let config = WireGuardConfig(privateKey: randomKey(), listenPort: 51820, replacePeers: true, peers: peers)
        let messages = try WireGuardNetlink.setDeviceMessages(family: family, device: "wg-quazzar0", config: config, maxMessageSize: maxSize)
        #expect(messages.count > 1)
        var seen = Set<WireGuardKey>()
        var prefixCount: [WireGuardKey: Int] = [:]
        for (i, m) in messages.enumerated() {
            #expect(m.count <= maxSize)
            let s = try WireGuardNetlink.summarize(m)
            // Device attributes and REPLACE_PEERS only in the first message.
            #expect((s.deviceFlags == 1) == (i == 0))
            #expect(s.hasPrivateKey == (i == 0) && s.hasListenPort == (i == 0))
            for p in s.peers {
                let replaceAllowedIPs = p.flags & 2 != 0
                if seen.contains(p.key) {
                    #expect(!replaceAllowedIPs, "continuation of a peer repeated REPLACE_ALLOWEDIPS")
                } else {
                    let original = try #require(config.peers.first { $0.publicKey == p.key })
                    #expect(replaceAllowedIPs == (original.replaceAllowedIPs && !original.remove))
                }
                if p.key == peers[8].publicKey { #expect(p.flags & 4 != 0, "update-only lost in a part") }
                if p.key == peers[9].publicKey { #expect(p.flags == 1) }
                seen.insert(p.key)
                prefixCount[p.key, default: 0] += p.allowedIPs
            }
        }
        #expect(seen.count == peers.count)
        for p in peers { #expect(prefixCount[p.publicKey] == (p.remove ? 0 : p.allowedIPs.count)) }

        // Read back through the dump accumulator: one peer per key, prefixes merged in order.
        let (device, count) = try WireGuardNetlink.accumulate(messages, name: "wg-quazzar0")
        #expect(count == messages.count)
        #expect(device.peers.count == peers.count)
        for (got, want) in zip(device.peers, peers) {
            #expect(got.publicKey == want.publicKey)
            #expect(got.allowedIPs == (want.remove ? [] : want.allowedIPs))
            if !want.remove {
                #expect(got.endpoint == want.endpoint)
                #expect(got.persistentKeepaliveInterval == want.persistentKeepaliveInterval ?? 0)
            }
        }
    }

    /// The dump reader merges by key, so a peer repeated out of order still ends up once, whole.
    @Test func accumulatorMergesByKeyNotJustAdjacency() throws {
        let k1 = randomKey(), k2 = randomKey()
        func msg(_ peers: [WireGuardPeerConfig]) throws -> [UInt8] {
            try WireGuardNetlink.setDeviceMessages(family: family, device: "wg0", config: WireGuardConfig(peers: peers))[0]
        }
        let m1 = try msg([WireGuardPeerConfig(publicKey: k1, endpoint: HostPort("198.18.0.1:1"), persistentKeepaliveInterval: 5,
                                              allowedIPs: [IPPrefix("100.64.0.1/32")!])])
        let m2 = try msg([WireGuardPeerConfig(publicKey: k2, allowedIPs: [IPPrefix("100.64.0.2/32")!])])
        let m3 = try msg([WireGuardPeerConfig(publicKey: k1, allowedIPs: [IPPrefix("100.64.1.0/24")!])])
        let (d, _) = try WireGuardNetlink.accumulate([m1, m2, m3], name: "wg0")
        #expect(d.peers.map(\.publicKey) == [k1, k2])
        #expect(d.peers[0].allowedIPs == [IPPrefix("100.64.0.1/32")!, IPPrefix("100.64.1.0/24")!])
        #expect(d.peers[0].endpoint == HostPort("198.18.0.1:1"))  // not wiped by the continuation
        #expect(d.peers[0].persistentKeepaliveInterval == 5)
    }

    @Test func tooSmallMessageSizeIsAnError() {
        let config = WireGuardConfig(peers: [syntheticPeer(0, key: randomKey())])
        #expect(throws: WireGuardError.self) {
            _ = try WireGuardNetlink.setDeviceMessages(family: family, device: "wg0", config: config, maxMessageSize: 64)
        }
    }

    @Test func errnoMapping() {
        #expect(WireGuardError.fromNetlink(errno: ENODEV, operation: "x", device: "wg0") == .deviceNotFound("wg0"))
        #expect(WireGuardError.fromNetlink(errno: EOPNOTSUPP, operation: "x", device: "eth0") == .deviceNotFound("eth0"))
        #expect(WireGuardError.fromNetlink(errno: EPERM, operation: "x") == .permissionDenied(operation: "x"))
        #expect(WireGuardError.fromNetlink(errno: EINVAL, operation: "x") == .invalidArgument(errno: EINVAL, operation: "x"))
        #expect(WireGuardError.fromNetlink(errno: EEXIST, operation: "x", device: "wg0") == .alreadyExists("wg0"))
        #expect(WireGuardError.fromNetlink(errno: EBUSY, operation: "x") == .netlink(errno: EBUSY, operation: "x"))
    }
}

/// The UAPI endpoint form (addresses and prefixes are MeshNet's parsers, tested in MeshNetTests).
@Suite("Byte-level endpoint parsing", .timeLimit(.minutes(10)))
struct ByteParsingTests {
    func bytes<R>(_ s: String, _ body: (ByteParsing.Bytes) -> R) -> R {
        Array(s.utf8).withUnsafeBufferPointer { body($0[...]) }
    }

    @Test func endpoints() {
        #expect(bytes("198.18.0.1:51820") { ByteParsing.endpoint($0) } == HostPort("198.18.0.1:51820"))
        #expect(bytes("[fd00::1]:7") { ByteParsing.endpoint($0) } == HostPort("[fd00::1]:7"))
        #expect(bytes("[fe80::1%eth0]:7") { ByteParsing.endpoint($0) } == HostPort("[fe80::1]:7"))
        for bad in ["198.18.0.1", "198.18.0.1:0", "198.18.0.1:65536", "[fd00::1:7", "fd00::1:7", "host:1", "[1.2.3.4]:1"] {
            #expect(bytes(bad) { ByteParsing.endpoint($0) } == nil, "\(bad)")
        }
    }
}
