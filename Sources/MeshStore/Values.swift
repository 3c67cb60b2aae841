import Foundation
import Glibc
import MeshNet
import Synchronization

/// A value that can be bound to a query parameter. Parameters travel in PostgreSQL's text format;
/// nil is SQL NULL.
public protocol PGEncodable: Sendable {
    /// The parameter in PostgreSQL text format.
    var pgText: String { get }
}

/// A value that can be read from a result column in PostgreSQL's text format.
public protocol PGDecodable {
    /// Parses the column's text; returns nil if it does not fit the type.
    init?(pgText: String)
    /// Parses the column's text as it lies in the result (UTF-8, no terminator). Rows decode
    /// through this, so a type that reads bytes (ids, times, numbers, arrays) needs no `String` per
    /// value; the default makes one and calls ``init(pgText:)``.
    init?(pgBytes: UnsafeBufferPointer<UInt8>)
}

extension PGDecodable {
    public init?(pgBytes: UnsafeBufferPointer<UInt8>) {
        self.init(pgText: String(decoding: pgBytes, as: UTF8.self))
    }
}

/// A decodable whose parser reads bytes: its text form goes through the same parser, so the two
/// cannot disagree.
public protocol PGBytesDecodable: PGDecodable {}

extension PGBytesDecodable {
    public init?(pgText: String) {
        var text = pgText
        guard let v = text.withUTF8({ Self(pgBytes: $0) }) else { return nil }
        self = v
    }
}

/// Integers read a decimal as PostgreSQL prints it (an optional sign, then digits); nil if it does
/// not fit the type. Their text form (``PGBytesDecodable``) goes through the same parser.
extension PGDecodable where Self: FixedWidthInteger {
    public init?(pgBytes: UnsafeBufferPointer<UInt8>) {
        guard let v = parseDecimal(pgBytes, as: Self.self) else { return nil }
        self = v
    }
}

func parseDecimal<T: FixedWidthInteger>(_ b: UnsafeBufferPointer<UInt8>, as: T.Type = T.self) -> T? {
    guard !b.isEmpty else { return nil }
    var i = 0
    let negative = b[0] == UInt8(ascii: "-")
    if negative || b[0] == UInt8(ascii: "+") { i = 1 }
    guard i < b.count else { return nil }
    var v: T = 0
    while i < b.count {
        let c = b[i]
        guard c >= 48, c <= 57 else { return nil }
        let (m, o1) = v.multipliedReportingOverflow(by: 10)
        let (a, o2) = negative ? m.subtractingReportingOverflow(T(c - 48)) : m.addingReportingOverflow(T(c - 48))
        guard !o1, !o2 else { return nil }
        v = a
        i += 1
    }
    return v
}

extension String: PGEncodable, PGDecodable {
    public var pgText: String { self }
    public init?(pgText: String) { self = pgText }
}

extension Int: PGEncodable, PGBytesDecodable {
    public var pgText: String { String(self) }
}

extension Int64: PGEncodable, PGBytesDecodable {
    public var pgText: String { String(self) }
}

extension Int32: PGEncodable, PGBytesDecodable {
    public var pgText: String { String(self) }
}

extension UInt32: PGEncodable, PGBytesDecodable {
    public var pgText: String { String(self) }
}

extension UInt64: PGEncodable, PGBytesDecodable {
    public var pgText: String { String(self) }
}

extension Double: PGEncodable, PGDecodable {
    public var pgText: String { String(self) }
    public init?(pgText: String) { self.init(pgText) }
}

extension Bool: PGEncodable, PGDecodable {
    public var pgText: String { self ? "t" : "f" }
    public init?(pgText: String) {
        switch pgText {
        case "t", "true", "1": self = true
        case "f", "false", "0": self = false
        default: return nil
        }
    }

    public init?(pgBytes: UnsafeBufferPointer<UInt8>) {
        // PostgreSQL prints a boolean as `t` or `f`; anything longer goes the text way.
        if pgBytes.count == 1, pgBytes[0] == UInt8(ascii: "t") { self = true; return }
        if pgBytes.count == 1, pgBytes[0] == UInt8(ascii: "f") { self = false; return }
        self.init(pgText: String(decoding: pgBytes, as: UTF8.self))
    }
}

/// A one-dimensional text array in PostgreSQL's output form: `{a,b,"c d","e\\"f"}`. PostgreSQL
/// quotes an element that is empty, is `NULL`, or holds a brace, comma, quote, backslash or space,
/// and escapes `"` and `\\` inside quotes. An array holding an SQL NULL, or a nested array, does not
/// decode (nil).
extension Array: PGDecodable, PGBytesDecodable where Element == String {
    public init?(pgBytes u: UnsafeBufferPointer<UInt8>) {
        guard u.count >= 2, u.first == UInt8(ascii: "{"), u.last == UInt8(ascii: "}") else { return nil }
        var out: [String] = []
        var i = 1
        let end = u.count - 1
        if i == end { self = out; return }
        while true {
            var element: [UInt8] = []
            if u[i] == UInt8(ascii: "\"") {
                i += 1
                while true {
                    guard i < end else { return nil }
                    let c = u[i]
                    if c == UInt8(ascii: "\"") { i += 1; break }
                    if c == UInt8(ascii: "\\") {
                        i += 1
                        guard i < end else { return nil }
                    }
                    element.append(u[i])
                    i += 1
                }
            } else {
                while i < end, u[i] != UInt8(ascii: ",") {
                    let c = u[i]
                    guard c != UInt8(ascii: "{"), c != UInt8(ascii: "}"), c != UInt8(ascii: "\"") else { return nil }
                    element.append(c)
                    i += 1
                }
                guard !element.isEmpty, !(element.count == 4 && element.map({ $0 & 0xDF }) == [UInt8]("NULL".utf8)) else { return nil }
            }
            out.append(String(decoding: element, as: UTF8.self))
            if i == end { break }
            guard u[i] == UInt8(ascii: ","), i + 1 < end else { return nil }
            i += 1
        }
        self = out
    }
}

extension UUID: PGEncodable, PGDecodable {
    public var pgText: String { lowercasedText }
    public init?(pgText: String) { self.init(text: pgText) }
    public init?(pgBytes: UnsafeBufferPointer<UInt8>) { self.init(utf8: pgBytes) }
}

/// `bytea` in hex format (`\x0a1b...`).
public struct ByteA: PGEncodable, PGBytesDecodable, Hashable {
    public var bytes: [UInt8]

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public var pgText: String {
        var s = "\\x"
        s.reserveCapacity(2 + bytes.count * 2)
        let hex = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(bytes.count * 2)
        for b in bytes {
            out.append(hex[Int(b >> 4)])
            out.append(hex[Int(b & 0xf)])
        }
        s += String(decoding: out, as: UTF8.self)
        return s
    }

    public init?(pgBytes u: UnsafeBufferPointer<UInt8>) {
        guard u.count >= 2, u[0] == UInt8(ascii: "\\"), u[1] == UInt8(ascii: "x"), u.count % 2 == 0 else { return nil }
        func nib(_ c: UInt8) -> UInt8? {
            switch c {
            case 48...57: c - 48
            case 97...102: c - 87
            case 65...70: c - 55
            default: nil
            }
        }
        var out = [UInt8]()
        out.reserveCapacity((u.count - 2) / 2)
        var i = 2
        while i < u.count {
            guard let h = nib(u[i]), let l = nib(u[i + 1]) else { return nil }
            out.append(h << 4 | l)
            i += 2
        }
        bytes = out
    }
}

/// `timestamptz` in UTC text form. Sessions run with `TimeZone=UTC`, so the server prints
/// `2026-11-25 08:50:01.123456+00`; formatting and parsing here avoid Foundation's formatters,
/// which are not safe to share between threads on every platform.
extension Date: PGEncodable, PGBytesDecodable {
    /// The earliest and latest instants written as dates (0001-01-01, and the last second whose
    /// microseconds fit in an Int64, in the year 294247: both within PostgreSQL's timestamptz);
    /// anything beyond, NaN included, is written as `-infinity` or `infinity`, PostgreSQL's own
    /// values for an unbounded time, instead of overflowing here.
    static let pgRange: ClosedRange<Double> = -62_135_596_800...9_223_372_036_853

    public var pgText: String {
        let seconds = timeIntervalSince1970
        guard seconds.isFinite, Self.pgRange.contains(seconds) else { return seconds < 0 ? "-infinity" : "infinity" }
        let micros = Int64((seconds * 1_000_000).rounded())
        var secs = Int(micros.quotientAndRemainder(dividingBy: 1_000_000).quotient)
        var frac = Int(micros.quotientAndRemainder(dividingBy: 1_000_000).remainder)
        if frac < 0 { frac += 1_000_000; secs -= 1 }
        var t = time_t(secs)
        var tm = tm()
        gmtime_r(&t, &tm)
        func pad(_ v: Int32, _ w: Int) -> String { let s = String(v); return String(repeating: "0", count: max(0, w - s.count)) + s }
        let f = String(frac)
        return "\(pad(tm.tm_year + 1900, 4))-\(pad(tm.tm_mon + 1, 2))-\(pad(tm.tm_mday, 2)) \(pad(tm.tm_hour, 2)):\(pad(tm.tm_min, 2)):\(pad(tm.tm_sec, 2)).\(String(repeating: "0", count: 6 - f.count) + f)+00"
    }

    public init?(pgBytes u: UnsafeBufferPointer<UInt8>) {
        guard let t = PGMicroseconds.parse(u) else { return nil }
        self.init(timeIntervalSince1970: Double(t.seconds) + Double(t.micros) / 1_000_000)
    }
}

/// A `timestamptz` as whole microseconds since the epoch, exactly as PostgreSQL holds it (a
/// `Date` is a Double, which cannot promise that): for cursors that must match a stored time.
public struct PGMicroseconds: PGBytesDecodable, Sendable, Equatable {
    public var value: Int64

    public init(_ value: Int64) { self.value = value }

    public init?(pgBytes: UnsafeBufferPointer<UInt8>) {
        guard let t = Self.parse(pgBytes) else { return nil }
        value = Int64(t.seconds) * 1_000_000 + Int64(t.micros)
    }

    /// Whole seconds since the epoch and the microseconds after them (0...999,999).
    static func parse(_ u: UnsafeBufferPointer<UInt8>) -> (seconds: Int, micros: Int)? {
        func num(_ a: Int, _ n: Int) -> Int32? {
            guard a + n <= u.count else { return nil }
            var v: Int32 = 0
            for c in u[a..<(a + n)] { guard c >= 48 && c <= 57 else { return nil }; v = v * 10 + Int32(c - 48) }
            return v
        }
        guard u.count >= 22, let y = num(0, 4), let mo = num(5, 2), let d = num(8, 2), let h = num(11, 2),
              let mi = num(14, 2), let se = num(17, 2) else { return nil }
        var i = 19
        var micros = 0
        if i < u.count, u[i] == UInt8(ascii: ".") {
            i += 1
            var digits = 0
            while i < u.count, u[i] >= 48, u[i] <= 57 {
                if digits < 6 { micros = micros * 10 + Int(u[i] - 48); digits += 1 }
                i += 1
            }
            while digits < 6 { micros *= 10; digits += 1 }
        }
        let zone = UnsafeBufferPointer(rebasing: u[min(i, u.count)...])
        guard zone.elementsEqual("+00".utf8) || zone.elementsEqual("+00:00".utf8) else { return nil }
        var tm = tm()
        tm.tm_year = y - 1900
        tm.tm_mon = mo - 1
        tm.tm_mday = d
        tm.tm_hour = h
        tm.tm_min = mi
        tm.tm_sec = se
        return (timegm(&tm), micros)
    }
}

/// One result row. Columns are looked up by name; values stay bytes until decoded, and decode
/// from those bytes (``PGDecodable/init(pgBytes:)``), so a column that is never read costs nothing
/// and most that are read cost no `String`. The decoders are inlinable, so each call site gets a
/// version for its type.
public struct Row: Sendable {
    @usableFromInline let result: ResultStorage
    @usableFromInline let row: Int

    init(result: ResultStorage, row: Int) {
        self.result = result
        self.row = row
    }

    /// Decodes a non-null column.
    @inlinable
    public func decode<T: PGDecodable>(_ name: String, as type: T.Type = T.self) throws -> T {
        let field = try position(name)
        return try withExtendedLifetime(result) {
            guard let b = result.bytes(row: row, field: field) else { throw StoreError.decoding(column: name, reason: "is NULL") }
            guard let v = T(pgBytes: b) else { throw Self.mismatch(name, T.self, b) }
            return v
        }
    }

    /// Decodes a nullable column.
    @inlinable
    public func decodeIfPresent<T: PGDecodable>(_ name: String, as type: T.Type = T.self) throws -> T? {
        let field = try position(name)
        return try withExtendedLifetime(result) {
            guard let b = result.bytes(row: row, field: field) else { return nil }
            guard let v = T(pgBytes: b) else { throw Self.mismatch(name, T.self, b) }
            return v
        }
    }

    /// The position of a named column.
    @usableFromInline
    func position(_ name: String) throws -> Int {
        guard let i = result.columns.position(name) else { throw StoreError.decoding(column: name, reason: "no such column") }
        return i
    }

    @usableFromInline
    static func mismatch(_ name: String, _ type: Any.Type, _ b: UnsafeBufferPointer<UInt8>) -> StoreError {
        .decoding(column: name, reason: "not a \(type): \(String(decoding: b, as: UTF8.self).prefix(64))")
    }
}

/// A result's values copied out of libpq into one allocation: every value's bytes back to back,
/// and per value its start and length (-1 for SQL NULL). The rows share it; it never changes after
/// it is made, and its bytes stay where they are until the last row is gone.
@usableFromInline
final class ResultStorage: @unchecked Sendable {
    let columns: ColumnIndex
    let fieldCount: Int
    let base: UnsafeMutableBufferPointer<UInt8>
    /// For value (row * fieldCount + field): start in `base`, and length or -1 for NULL.
    let spans: [(start: Int, length: Int)]

    /// Takes ownership of `base` (allocated by the caller, freed here).
    init(columns: ColumnIndex, fieldCount: Int, base: UnsafeMutableBufferPointer<UInt8>, spans: [(start: Int, length: Int)]) {
        self.columns = columns
        self.fieldCount = fieldCount
        self.base = base
        self.spans = spans
    }

    deinit { base.deallocate() }

    /// A value's bytes, or nil for SQL NULL. Valid while this storage lives.
    @usableFromInline
    func bytes(row: Int, field: Int) -> UnsafeBufferPointer<UInt8>? {
        let s = spans[row * fieldCount + field]
        guard s.length >= 0 else { return nil }
        return UnsafeBufferPointer(rebasing: base[s.start..<(s.start + s.length)])
    }
}

/// A result's column names → positions (the first column of a repeated name wins). Rows look a
/// column up by name for every value they decode, so this is an open-addressing table over an
/// FNV-1a hash of the name's bytes: a `Dictionary<String, Int>` hashed each name with SipHash,
/// which made the lookups the largest part of decoding a device list.
final class ColumnIndex: Sendable {
    let names: [String]
    /// Positions into `names` by hash slot; -1 is an empty slot. At most half full.
    let slots: [Int32]
    let mask: Int
    /// Whether the column at each position is the first of its name.
    private let isFirst: [Bool]
    /// Readers decode a row's columns mostly in the order the statement lists them, so the column
    /// after the last one found is tried first (a name comparison instead of a hash), unless an
    /// earlier column has the same name. Only a guess: rows read on several threads at once at
    /// worst miss it.
    private let next = Atomic<Int>(0)

    init(_ names: [String]) {
        self.names = names
        var size = 8
        while size < names.count * 2 { size *= 2 }
        mask = size - 1
        var slots = [Int32](repeating: -1, count: size)
        var isFirst = [Bool](repeating: false, count: names.count)
        for (i, n) in names.enumerated() {
            var k = Self.hash(n) & mask
            while slots[k] >= 0 && names[Int(slots[k])] != n { k = (k + 1) & mask }
            if slots[k] < 0 {
                slots[k] = Int32(i)
                isFirst[i] = true
            }
        }
        self.slots = slots
        self.isFirst = isFirst
    }

    func position(_ name: String) -> Int? {
        let guess = next.load(ordering: .relaxed)
        if guess < names.count, names[guess] == name, isFirst[guess] {
            next.store(guess + 1, ordering: .relaxed)
            return guess
        }
        guard let found = lookup(name) else { return nil }
        next.store(found + 1, ordering: .relaxed)
        return found
    }

    private func lookup(_ name: String) -> Int? {
        var k = Self.hash(name) & mask
        while true {
            let p = slots[k]
            if p < 0 { return nil }
            if names[Int(p)] == name { return Int(p) }
            k = (k + 1) & mask
        }
    }

    static func hash(_ name: String) -> Int {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        var name = name
        name.withUTF8 { for b in $0 { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01b3 } }
        return Int(truncatingIfNeeded: h ^ (h >> 29))
    }
}
