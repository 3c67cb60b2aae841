import Foundation
import Glibc
import MeshNet

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
}

extension String: PGEncodable, PGDecodable {
    public var pgText: String { self }
    public init?(pgText: String) { self = pgText }
}

extension Int: PGEncodable, PGDecodable {
    public var pgText: String { String(self) }
    public init?(pgText: String) { self.init(pgText) }
}

extension Int64: PGEncodable, PGDecodable {
    public var pgText: String { String(self) }
    public init?(pgText: String) { self.init(pgText) }
}

extension Int32: PGEncodable, PGDecodable {
    public var pgText: String { String(self) }
    public init?(pgText: String) { self.init(pgText) }
}

extension UInt32: PGEncodable, PGDecodable {
    public var pgText: String { String(self) }
    public init?(pgText: String) { self.init(pgText) }
}

extension UInt64: PGEncodable, PGDecodable {
    public var pgText: String { String(self) }
    public init?(pgText: String) { self.init(pgText) }
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
}

/// A one-dimensional text array in PostgreSQL's output form: `{a,b,"c d","e\\"f"}`. PostgreSQL
/// quotes an element that is empty, is `NULL`, or holds a brace, comma, quote, backslash or space,
/// and escapes `"` and `\\` inside quotes. An array holding an SQL NULL, or a nested array, does not
/// decode (nil).
extension Array: PGDecodable where Element == String {
    public init?(pgText: String) {
        let u = Array<UInt8>(pgText.utf8)
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
                guard !element.isEmpty, String(decoding: element, as: UTF8.self).uppercased() != "NULL" else { return nil }
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
}

/// `bytea` in hex format (`\x0a1b...`).
public struct ByteA: PGEncodable, PGDecodable, Hashable {
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

    public init?(pgText: String) {
        let u = Array(pgText.utf8)
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
extension Date: PGEncodable, PGDecodable {
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

    public init?(pgText: String) {
        let u = Array(pgText.utf8)
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
        guard i < u.count, String(decoding: u[i...], as: UTF8.self) == "+00" || String(decoding: u[i...], as: UTF8.self) == "+00:00" else { return nil }
        var tm = tm()
        tm.tm_year = y - 1900
        tm.tm_mon = mo - 1
        tm.tm_mday = d
        tm.tm_hour = h
        tm.tm_min = mi
        tm.tm_sec = se
        let secs = timegm(&tm)
        self.init(timeIntervalSince1970: Double(secs) + Double(micros) / 1_000_000)
    }
}

/// One result row. Columns are looked up by name or position; values stay bytes until decoded, so
/// a column that is never read costs no String.
public struct Row: Sendable {
    let result: ResultStorage
    let row: Int

    var columns: ColumnIndex { result.columns }

    /// The raw text of a column, or nil for SQL NULL.
    public func raw(_ name: String) throws -> String? {
        guard let i = columns.index[name] else { throw StoreError.decoding(column: name, reason: "no such column") }
        return result.text(row: row, field: i)
    }

    /// Decodes a non-null column.
    public func decode<T: PGDecodable>(_ name: String, as type: T.Type = T.self) throws -> T {
        guard let text = try raw(name) else { throw StoreError.decoding(column: name, reason: "is NULL") }
        guard let v = T(pgText: text) else { throw StoreError.decoding(column: name, reason: "not a \(T.self): \(text.prefix(64))") }
        return v
    }

    /// Decodes a nullable column.
    public func decodeIfPresent<T: PGDecodable>(_ name: String, as type: T.Type = T.self) throws -> T? {
        guard let text = try raw(name) else { return nil }
        guard let v = T(pgText: text) else { throw StoreError.decoding(column: name, reason: "not a \(T.self): \(text.prefix(64))") }
        return v
    }

    /// Decodes a non-null column by position.
    public func decode<T: PGDecodable>(at index: Int, as type: T.Type = T.self) throws -> T {
        guard index < result.fieldCount, let text = result.text(row: row, field: index) else {
            throw StoreError.decoding(column: "#\(index)", reason: "is NULL or missing")
        }
        guard let v = T(pgText: text) else { throw StoreError.decoding(column: "#\(index)", reason: "not a \(T.self)") }
        return v
    }
}

/// A result's values copied out of libpq in one buffer: every value's bytes back to back, and per
/// value its start and length (-1 for SQL NULL). One allocation per result instead of one String
/// per value; the rows share it.
final class ResultStorage: Sendable {
    let columns: ColumnIndex
    let fieldCount: Int
    let bytes: [UInt8]
    /// For value (row * fieldCount + field): start in `bytes`, and length or -1 for NULL.
    let spans: [(start: Int, length: Int)]

    init(columns: ColumnIndex, fieldCount: Int, bytes: [UInt8], spans: [(start: Int, length: Int)]) {
        self.columns = columns
        self.fieldCount = fieldCount
        self.bytes = bytes
        self.spans = spans
    }

    func text(row: Int, field: Int) -> String? {
        let s = spans[row * fieldCount + field]
        guard s.length >= 0 else { return nil }
        return bytes.withUnsafeBufferPointer { b in
            String(decoding: UnsafeBufferPointer(rebasing: b[s.start..<(s.start + s.length)]), as: UTF8.self)
        }
    }
}

final class ColumnIndex: Sendable {
    let index: [String: Int]
    init(_ names: [String]) {
        var d: [String: Int] = [:]
        for (i, n) in names.enumerated() where d[n] == nil { d[n] = i }
        index = d
    }
}
