import CQRencode

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// How much of a QR code can be damaged or misread before it stops decoding.
///
/// Higher levels add Reed–Solomon redundancy, which makes the symbol denser for the same payload.
public enum QRErrorCorrection: Sendable, Hashable, CaseIterable {
    /// About 7% of codewords recoverable.
    case low
    /// About 15% of codewords recoverable.
    case medium
    /// About 25% of codewords recoverable.
    case quartile
    /// About 30% of codewords recoverable.
    case high

    /// The largest payload, in bytes, that an 8-bit-mode symbol (version 40) holds at this level.
    ///
    /// Figures from ISO/IEC 18004 table 7 (byte mode, version 40).
    public var maximumByteCount: Int {
        switch self {
        case .low: 2953
        case .medium: 2331
        case .quartile: 1663
        case .high: 1273
        }
    }

    /// libqrencode's constant for this level.
    var qrencodeLevel: QRecLevel {
        switch self {
        case .low: QR_ECLEVEL_L
        case .medium: QR_ECLEVEL_M
        case .quartile: QR_ECLEVEL_Q
        case .high: QR_ECLEVEL_H
        }
    }
}

/// Why a payload could not be turned into a QR code.
public enum QRCodeError: Error, Sendable, Hashable {
    /// The payload was empty; a QR code of nothing is never what a caller meant (libqrencode rejects it too).
    case emptyInput
    /// The payload does not fit in the largest symbol (version 40) at the requested error-correction level.
    case inputTooLong(byteCount: Int, maximumByteCount: Int)
    /// libqrencode failed for another reason; `errno` is what it reported (e.g. `ENOMEM`).
    case encodingFailed(errno: Int32)
}

/// A QR code symbol: a square matrix of dark and light modules, without its quiet zone.
///
/// The value is immutable and `Sendable`; it owns a copy of the modules, not libqrencode's buffer.
public struct QRCode: Sendable, Hashable {
    /// The symbol version, 1...40 (the smallest that fits the payload at the chosen level).
    public let version: Int
    /// Modules per side (`17 + 4 * version`).
    public let size: Int
    /// Row-major, `true` for a dark module.
    private let modules: [Bool]

    /// The light margin, in modules, around the symbol; ISO/IEC 18004 requires at least four.
    public static let quietZone = 4

    /// Encodes `text` (as UTF-8, byte for byte, in 8-bit mode) at the given error-correction level.
    ///
    /// 8-bit mode keeps the payload exact: case, whitespace and newlines survive as written, which a
    /// WireGuard config needs. No ECI header is added; decoders read the bytes as UTF-8 or Latin-1,
    /// which agree for the ASCII a wg-quick config consists of.
    public init(encoding text: String, errorCorrection: QRErrorCorrection = .medium) throws(QRCodeError) {
        try self.init(encoding: Array(text.utf8), errorCorrection: errorCorrection)
    }

    /// Encodes raw bytes in 8-bit mode at the given error-correction level.
    public init(encoding bytes: [UInt8], errorCorrection: QRErrorCorrection = .medium) throws(QRCodeError) {
        guard !bytes.isEmpty else { throw .emptyInput }
        // Checked up front so the error is the same whatever errno libqrencode would pick (ERANGE or EINVAL).
        guard bytes.count <= errorCorrection.maximumByteCount else {
            throw .inputTooLong(byteCount: bytes.count, maximumByteCount: errorCorrection.maximumByteCount)
        }

        // No lock around libqrencode: Debian's libqrencode 4 (the one this package links; see
        // Package.swift) is built with thread safety, guarding its only shared state, the Reed–Solomon
        // table cache, with a pthread mutex (the library imports pthread_mutex_lock and
        // pthread_mutex_unlock). A process-wide lock here held every concurrent device creation
        // behind one encoder, on one core, for the millisecond each code takes.
        let result: Result<(version: Int, size: Int, modules: [Bool]), QRCodeError> = {
            // errno is thread-local and read right after the call, on the same thread.
            let code = bytes.withUnsafeBufferPointer { buffer in
                // version 0: let libqrencode pick the smallest version that fits.
                QRcode_encodeData(Int32(buffer.count), buffer.baseAddress, 0, errorCorrection.qrencodeLevel)
            }
            guard let code else {
                let reason = errno
                if reason == ERANGE {
                    return .failure(.inputTooLong(byteCount: bytes.count,
                                                  maximumByteCount: errorCorrection.maximumByteCount))
                }
                return .failure(.encodingFailed(errno: reason))
            }
            defer { QRcode_free(code) }
            let width = Int(code.pointee.width)
            // Bit 0 of each byte is the module colour; the other bits describe its role (finder, timing, ...).
            let matrix = UnsafeBufferPointer(start: code.pointee.data, count: width * width).map { $0 & 1 == 1 }
            return .success((Int(code.pointee.version), width, matrix))
        }()
        let encoded = try result.get()
        version = encoded.version
        size = encoded.size
        modules = encoded.modules
    }

    /// Whether the module at column `x`, row `y` (both `0..<size`, origin top left) is dark.
    public func isDark(x: Int, y: Int) -> Bool {
        precondition((0..<size).contains(x) && (0..<size).contains(y), "module (\(x), \(y)) outside a \(size)x\(size) symbol")
        return modules[y * size + x]
    }

    /// Renders the symbol as a standalone SVG document.
    ///
    /// The drawing is in module units (`viewBox` covers the symbol plus a four-module quiet zone) on a
    /// white background, with every dark module in ONE `<path>`: each horizontal run of dark modules is
    /// a closed `M x y h w v 1 h -w z` rectangle. One element keeps the document small (43 KB for the
    /// 839-byte test config, where a `<rect>` per dark module would take about 250 KB) and fast to
    /// rasterise, and `crispEdges` stops anti-aliasing seams between adjacent runs.
    ///
    /// - Parameter moduleSize: the width and height, in pixels, that one module gets in the `width` and
    ///   `height` attributes. Must be at least 1. The drawing scales freely; this is only its natural size.
    public func svg(moduleSize: Int = 6) -> String {
        precondition(moduleSize >= 1, "moduleSize must be at least 1, got \(moduleSize)")
        let quiet = Self.quietZone
        let extent = size + 2 * quiet
        let pixels = extent * moduleSize

        // One horizontal run of dark modules per subpath, written straight as bytes: a version-23
        // code has a few thousand runs, and string interpolation per run cost as much as the encoding.
        var path: [UInt8] = []
        path.reserveCapacity(size * size * 3)
        func put(_ n: Int) {
            if n >= 100 { path.append(UInt8(ascii: "0") + UInt8(n / 100)) }
            if n >= 10 { path.append(UInt8(ascii: "0") + UInt8(n / 10 % 10)) }
            path.append(UInt8(ascii: "0") + UInt8(n % 10))
        }
        for y in 0..<size {
            let row = y * size
            var x = 0
            while x < size {
                guard modules[row + x] else {
                    x += 1
                    continue
                }
                let start = x
                while x < size && modules[row + x] { x += 1 }
                let run = x - start
                // "M<x> <y>h<run>v1h-<run>z"
                path.append(UInt8(ascii: "M")); put(start + quiet)
                path.append(UInt8(ascii: " ")); put(y + quiet)
                path.append(UInt8(ascii: "h")); put(run)
                path.append(contentsOf: [UInt8(ascii: "v"), UInt8(ascii: "1"), UInt8(ascii: "h"), UInt8(ascii: "-")]); put(run)
                path.append(UInt8(ascii: "z"))
            }
        }

        return "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"\(pixels)\" height=\"\(pixels)\""
            + " viewBox=\"0 0 \(extent) \(extent)\" shape-rendering=\"crispEdges\">"
            + "<rect width=\"\(extent)\" height=\"\(extent)\" fill=\"#ffffff\"/>"
            + "<path fill=\"#000000\" d=\"\(String(decoding: path, as: UTF8.self))\"/>"
            + "</svg>\n"
    }
}
