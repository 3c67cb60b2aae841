import MeshKeys

/// A 32-byte WireGuard key: a Curve25519 private or public key, or a preshared key.
///
/// Stored inline as four words so a device with ten thousand peers does not allocate per key.
/// Keys are parsed from and formatted to base64 (the `wg` text form) and hex (the UAPI form).
/// `description` prints base64; never log a private or preshared key.
public struct WireGuardKey: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// Byte length of every WireGuard key.
    public static let byteCount = 32

    // Little-endian packing of the 32 bytes; only the byte view is meaningful.
    private var w0: UInt64, w1: UInt64, w2: UInt64, w3: UInt64

    /// The all-zero key. As a private key or preshared key in a configuration it means "clear".
    public static let zero = WireGuardKey(words: 0, 0, 0, 0)

    private init(words w0: UInt64, _ w1: UInt64, _ w2: UInt64, _ w3: UInt64) {
        self.w0 = w0
        self.w1 = w1
        self.w2 = w2
        self.w3 = w3
    }

    /// Creates a key from exactly 32 bytes.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == Self.byteCount else { return nil }
        self = .zero
        withUnsafeMutableBytes(of: &self) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
    }

    /// Creates a key from a raw 32-byte buffer; the caller guarantees the length.
    init(unsafeRaw raw: UnsafeRawBufferPointer) {
        precondition(raw.count == Self.byteCount)
        self = .zero
        withUnsafeMutableBytes(of: &self) { $0.copyMemory(from: raw) }
    }

    /// The 32 bytes in order.
    public var bytes: [UInt8] {
        withUnsafeBytes(of: self) { Array($0) }
    }

    /// Calls `body` with the 32 bytes, without allocating.
    public func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withUnsafeBytes(of: self) { try body($0) }
    }

    /// True for the all-zero key.
    public var isZero: Bool { w0 | w1 | w2 | w3 == 0 }

    // MARK: Base64

    /// Parses the standard 44-character base64 form (with one `=` of padding), as `wg` prints it.
    public init?(base64 text: String) {
        var utf8 = text.utf8.makeIterator()
        var out = [UInt8]()
        out.reserveCapacity(33)
        var acc: UInt32 = 0, bits = 0, count = 0, padding = 0
        while let c = utf8.next() {
            count += 1
            if c == UInt8(ascii: "=") { padding += 1; continue }
            guard padding == 0, let v = Self.base64Value(c) else { return nil }
            acc = acc << 6 | UInt32(v)
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: acc >> UInt32(bits)))
            }
        }
        // 32 bytes encode to 43 symbols plus one pad; the 2 leftover bits must be zero (canonical form).
        guard count == 44, padding == 1, out.count == 32, acc & ((1 << UInt32(bits)) - 1) == 0 else { return nil }
        self.init(bytes: out)
    }

    /// The standard base64 form, 44 characters.
    public var base64: String {
        let alphabet = Self.base64Alphabet
        return withBytes { raw in
            var out = [UInt8]()
            out.reserveCapacity(44)
            var i = 0
            while i + 3 <= 32 {
                let n = UInt32(raw[i]) << 16 | UInt32(raw[i + 1]) << 8 | UInt32(raw[i + 2])
                out.append(alphabet[Int(n >> 18 & 63)])
                out.append(alphabet[Int(n >> 12 & 63)])
                out.append(alphabet[Int(n >> 6 & 63)])
                out.append(alphabet[Int(n & 63)])
                i += 3
            }
            let n = UInt32(raw[30]) << 16 | UInt32(raw[31]) << 8
            out.append(alphabet[Int(n >> 18 & 63)])
            out.append(alphabet[Int(n >> 12 & 63)])
            out.append(alphabet[Int(n >> 6 & 63)])
            out.append(UInt8(ascii: "="))
            return String(decoding: out, as: UTF8.self)
        }
    }

    private static let base64Alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    private static func base64Value(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): c - UInt8(ascii: "A")
        case UInt8(ascii: "a")...UInt8(ascii: "z"): c - UInt8(ascii: "a") + 26
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0") + 52
        case UInt8(ascii: "+"): 62
        case UInt8(ascii: "/"): 63
        default: nil
        }
    }

    // MARK: Hex

    /// Parses 64 hex digits (either case), the UAPI form.
    public init?(hex text: String) {
        var text = text
        let parsed: WireGuardKey? = text.withUTF8 { Self.parseHex($0[...]) }
        guard let parsed else { return nil }
        self = parsed
    }

    /// Parses 64 hex digits from raw bytes; used by the UAPI reply parser to avoid building strings.
    static func parseHex(_ utf8: Slice<UnsafeBufferPointer<UInt8>>) -> WireGuardKey? {
        guard utf8.count == 64 else { return nil }
        var key = WireGuardKey.zero
        let ok = withUnsafeMutableBytes(of: &key) { raw -> Bool in
            var i = utf8.startIndex
            for j in 0..<32 {
                guard let hi = hexValue(utf8[i]), let lo = hexValue(utf8[i + 1]) else { return false }
                raw[j] = hi << 4 | lo
                i += 2
            }
            return true
        }
        return ok ? key : nil
    }

    /// 64 lowercase hex digits.
    public var hex: String {
        var out = [UInt8]()
        out.reserveCapacity(64)
        appendHex(to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends the 64 lowercase hex digits to a byte buffer (the UAPI request builder's fast path).
    func appendHex(to out: inout [UInt8]) {
        withBytes { raw in
            for b in raw {
                out.append(Self.hexDigits[Int(b >> 4)])
                out.append(Self.hexDigits[Int(b & 0xf)])
            }
        }
    }

    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

    @inline(__always)
    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    public var description: String { base64 }

    /// Orders keys by their bytes, as `memcmp` would; used to sort peers deterministically.
    public static func < (l: Self, r: Self) -> Bool {
        l.withBytes { a in
            r.withBytes { b in
                for i in 0..<32 where a[i] != b[i] { return a[i] < b[i] }
                return false
            }
        }
    }
}

extension WireGuardKey {
    /// The public key of this key taken as a private key (X25519 from swift-crypto, clamping
    /// included), as `wg pubkey` computes it.
    public var publicKeyOfPrivate: WireGuardKey {
        WireGuardKeyPair.publicKey(forPrivateKey: bytes).flatMap { WireGuardKey(bytes: $0) } ?? .zero
    }
}
