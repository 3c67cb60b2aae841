import Foundation
import MeshQR
import Testing

/// A device config as ProvisionSvc hands it out: dual-stack addresses, DNS, MTU, and three node peers.
/// Keys are 32 random bytes in base64, the shape `wg genkey`/`wg pubkey` print.
let deviceConfig = """
    [Interface]
    PrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=
    Address = 100.64.12.7/32, fd12:3456:789a:1::c07/128
    DNS = 100.64.0.1, fd12:3456:789a::1, tenant-7f3a.mesh.internal
    MTU = 1380

    [Peer]
    # hub-fra1
    PublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=
    Endpoint = 203.0.113.10:51820
    AllowedIPs = 100.64.0.1/32, fd12:3456:789a::1/128, 100.64.12.0/22, fd12:3456:789a:1::/64
    PersistentKeepalive = 25

    [Peer]
    # node-ams2
    PublicKey = TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=
    Endpoint = [2001:db8:42::2]:51820
    AllowedIPs = 100.64.0.2/32, fd12:3456:789a::2/128, 10.20.0.0/16, 192.168.77.0/24
    PersistentKeepalive = 25

    [Peer]
    # node-nyc3
    PublicKey = gN65BkIKy1eCE9pP1wdc8ROUtkHLF2PfAqYdyYBz6EA=
    Endpoint = nyc3.nodes.example.net:443
    AllowedIPs = 100.64.0.3/32, fd12:3456:789a::3/128, 172.16.40.0/21
    PersistentKeepalive = 15

    """

/// Renders `svg`, decodes it with zbarimg and returns the payload bytes.
func scanBack(_ svg: String) throws -> [UInt8] {
    let directory = try ExternalTools.scratchDirectory()
    defer { try? FileManager.default.removeItem(at: directory) }
    let png = try ExternalTools.renderPNG(svg: svg, in: directory)
    return try ExternalTools.decodeQR(png: png)
}

@Suite(.timeLimit(.minutes(5))) struct RoundTripTests {
    @Test func deviceConfigScansBackByteForByte() throws {
        let svg = try MeshQR.svg(for: deviceConfig)
        let scanned = try scanBack(svg)
        #expect(scanned == Array(deviceConfig.utf8),
                "zbarimg read back:\n\(String(decoding: scanned, as: UTF8.self))")
    }

    @Test(arguments: QRErrorCorrection.allCases)
    func everyLevelScansBack(level: QRErrorCorrection) throws {
        let svg = try MeshQR.svg(for: deviceConfig, errorCorrection: level, moduleSize: 4)
        #expect(try scanBack(svg) == Array(deviceConfig.utf8))
    }

    /// Non-ASCII survives as UTF-8 (a label in a comment), and so do a leading space and no final newline.
    @Test func utf8AndEdgesScanBack() throws {
        let text = " # Büro-Laptop ✓ 🦊\r\n[Interface]\tMTU = 1280"
        #expect(try scanBack(try MeshQR.svg(for: text)) == Array(text.utf8))
    }

    /// The largest payload that fits at M is a version-40 symbol; it must still scan.
    @Test func fullVersion40ScansBack() throws {
        let text = String((0..<QRErrorCorrection.medium.maximumByteCount).map { i in
            Character(Unicode.Scalar(UInt8(33 + (i * 7) % 94)))
        })
        let code = try QRCode(encoding: text)
        #expect(code.version == 40)
        #expect(try scanBack(code.svg(moduleSize: 4)) == Array(text.utf8))
    }
}

@Suite(.timeLimit(.minutes(5))) struct SVGStructureTests {
    @Test func documentShape() throws {
        let code = try QRCode(encoding: deviceConfig)
        let svg = code.svg(moduleSize: 5)
        // Four light modules each side, as ISO/IEC 18004 requires: a literal, not QRCode.quietZone.
        let extent = code.size + 2 * 4

        #expect(svg.hasPrefix("<svg xmlns=\"http://www.w3.org/2000/svg\""))
        #expect(svg.contains("viewBox=\"0 0 \(extent) \(extent)\""))
        #expect(svg.contains("width=\"\(extent * 5)\" height=\"\(extent * 5)\""))
        #expect(svg.contains("shape-rendering=\"crispEdges\""))
        #expect(occurrences(of: "<path", in: svg) == 1)
        #expect(occurrences(of: "<rect", in: svg) == 1, "one background rect, no rect per module")
        #expect(svg.contains("<rect width=\"\(extent)\" height=\"\(extent)\" fill=\"#ffffff\"/>"))
        #expect(svg.contains("<path fill=\"#000000\" d=\""))
    }

    /// The path paints exactly the dark modules of the matrix, each once, and nothing in the quiet zone.
    @Test func pathPaintsExactlyTheDarkModules() throws {
        let code = try QRCode(encoding: deviceConfig)
        let painted = try paintedCells(in: code.svg())
        let quiet = 4

        var expected = Set<Cell>()
        for y in 0..<code.size {
            for x in 0..<code.size where code.isDark(x: x, y: y) {
                expected.insert(Cell(x: x + quiet, y: y + quiet))
            }
        }
        #expect(painted.count == expected.count, "\(painted.count) cells painted for \(expected.count) dark modules")
        #expect(Set(painted) == expected)
        #expect(painted.allSatisfy { (quiet..<quiet + code.size).contains($0.x) && (quiet..<quiet + code.size).contains($0.y) })
    }

    /// Runs are merged: no two subpaths on one row touch (they would have been one run).
    @Test func horizontalRunsAreMerged() throws {
        let svg = try MeshQR.svg(for: deviceConfig)
        let runs = try subpaths(in: svg)
        let byRow = Dictionary(grouping: runs, by: \.y)
        for (_, row) in byRow {
            let sorted = row.sorted { $0.x < $1.x }
            for (left, right) in zip(sorted, sorted.dropFirst()) {
                #expect(left.x + left.width < right.x)
            }
        }
    }

    @Test func moduleSizeOnlyChangesTheNaturalSize() throws {
        let small = try MeshQR.svg(for: "hello", moduleSize: 1)
        let large = try MeshQR.svg(for: "hello", moduleSize: 10)
        let code = try QRCode(encoding: "hello")
        let extent = code.size + 2 * QRCode.quietZone
        #expect(small.contains("width=\"\(extent)\""))
        #expect(large.contains("width=\"\(extent * 10)\""))
        #expect(try subpaths(in: small) == subpaths(in: large))
    }

    @Test func levelChoosesVersion() throws {
        let versions = try QRErrorCorrection.allCases.map { try QRCode(encoding: deviceConfig, errorCorrection: $0).version }
        #expect(versions == versions.sorted(), "more redundancy never makes the symbol smaller: \(versions)")
        #expect(versions.first! < versions.last!)
    }
}

@Suite(.timeLimit(.minutes(5))) struct InputLimitTests {
    @Test func emptyInputIsATypedError() {
        #expect(throws: QRCodeError.emptyInput) { try MeshQR.svg(for: "") }
        #expect(throws: QRCodeError.emptyInput) { try QRCode(encoding: [UInt8]()) }
    }

    @Test(arguments: QRErrorCorrection.allCases)
    func oneByteTooManyIsATypedError(level: QRErrorCorrection) throws {
        let limit = level.maximumByteCount
        let fits = try QRCode(encoding: [UInt8](repeating: 0xA5, count: limit), errorCorrection: level)
        #expect(fits.version == 40)
        #expect(throws: QRCodeError.inputTooLong(byteCount: limit + 1, maximumByteCount: limit)) {
            try QRCode(encoding: [UInt8](repeating: 0xA5, count: limit + 1), errorCorrection: level)
        }
    }

    @Test func farTooLongIsATypedError() {
        let text = String(repeating: deviceConfig, count: 10)
        #expect(throws: QRCodeError.inputTooLong(byteCount: text.utf8.count, maximumByteCount: 2331)) {
            try MeshQR.svg(for: text)
        }
    }

    /// Bytes are bytes: NUL and 0xFF are encoded, not cut off as a C string would be.
    @Test func binaryPayloadKeepsEveryByte() throws {
        let bytes: [UInt8] = [0x00, 0xFF, 0x0A, 0x00, 0x41]
        let code = try QRCode(encoding: bytes)
        #expect(code.version == 1)
    }
}

@Suite(.timeLimit(.minutes(5))) struct ConcurrencyTests {
    /// Many tasks encoding at once get the same symbols as one task encoding in turn. libqrencode
    /// is called without a lock of ours, so this is the test of its thread safety: different
    /// payloads at every level (each level has its own Reed–Solomon codes in the shared cache).
    @Test(arguments: QRErrorCorrection.allCases)
    func concurrentEncodingMatchesSerial(level: QRErrorCorrection) async throws {
        let payloads = (0..<64).map { "\(deviceConfig)# revision \($0)\n" }
        let serial = try payloads.map { try QRCode(encoding: $0, errorCorrection: level) }
        let concurrent = try await withThrowingTaskGroup(of: (Int, QRCode).self) { group in
            for (index, payload) in payloads.enumerated() {
                group.addTask { (index, try QRCode(encoding: payload, errorCorrection: level)) }
            }
            var results = [QRCode?](repeating: nil, count: payloads.count)
            for try await (index, code) in group { results[index] = code }
            return results
        }
        #expect(concurrent == serial)
    }
}

// MARK: - Reading the path back

/// One module cell in viewBox coordinates.
struct Cell: Hashable {
    var x: Int
    var y: Int
}

/// One `M x y h w v 1 h -w z` subpath.
struct Run: Hashable {
    var x: Int
    var y: Int
    var width: Int
}

struct PathFormatError: Error, CustomStringConvertible {
    var description: String
}

func occurrences(of needle: String, in haystack: String) -> Int {
    haystack.components(separatedBy: needle).count - 1
}

/// Parses the `d` attribute of the single path into its subpaths, rejecting anything but unit-high runs.
func subpaths(in svg: String) throws -> [Run] {
    guard let start = svg.range(of: " d=\""), let end = svg[start.upperBound...].firstIndex(of: "\"") else {
        throw PathFormatError(description: "no d attribute")
    }
    let data = svg[start.upperBound..<end]
    var runs: [Run] = []
    for piece in data.split(separator: "z") {
        // "M12 4h3v1h-3"
        let pattern = /^M(\d+) (\d+)h(\d+)v1h-(\d+)$/
        guard let match = piece.wholeMatch(of: pattern),
              let x = Int(match.1), let y = Int(match.2), let w = Int(match.3), let back = Int(match.4),
              w == back, w > 0 else {
            throw PathFormatError(description: "unexpected subpath \(piece)")
        }
        runs.append(Run(x: x, y: y, width: w))
    }
    return runs
}

/// Every cell the path paints, once per subpath that covers it (so overlaps show as duplicates).
func paintedCells(in svg: String) throws -> [Cell] {
    try subpaths(in: svg).flatMap { run in (run.x..<run.x + run.width).map { Cell(x: $0, y: run.y) } }
}
