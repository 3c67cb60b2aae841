import Foundation
import MeshNet

extension Date {
    /// Milliseconds since the Unix epoch.
    public var unixMilliseconds: Int64 { Int64((timeIntervalSince1970 * 1000).rounded()) }

    /// A date from milliseconds since the Unix epoch.
    public init(unixMilliseconds ms: Int64) { self.init(timeIntervalSince1970: Double(ms) / 1000) }
}

extension UUID {
    /// The lowercase text form used on the bus, in subjects and in DNS-safe places
    /// (``lowercasedText``, written without Foundation's formatter).
    public var lowercased: String { lowercasedText }
}

extension String {
    /// nil when empty.
    public var nilIfEmpty: String? { isEmpty ? nil : self }
}

/// Timestamps in responses: ISO 8601, UTC, with milliseconds (`2026-11-25T08:50:01.123Z`).
///
/// Written by hand rather than with `Date.ISO8601FormatStyle`, which goes through a calendar for
/// every value: a device list carries two timestamps per device.
public enum Timestamp {
    /// The ISO 8601 form of milliseconds since the epoch (years 0000–9999).
    public static func iso(ms: Int64) -> String {
        let (days, msOfDay) = ms.floorDivided(by: 86_400_000)
        let (year, month, day) = civil(fromDays: days)
        return String(unsafeUninitializedCapacity: 24) { out in
            var o = 0
            func put(_ value: Int64, _ width: Int, _ separator: Unicode.Scalar) {
                var v = max(0, min(value, 9999))
                for k in stride(from: width - 1, through: 0, by: -1) {
                    out[o + k] = UInt8(ascii: "0") + UInt8(v % 10)
                    v /= 10
                }
                out[o + width] = UInt8(ascii: separator)
                o += width + 1
            }
            put(year, 4, "-"); put(month, 2, "-"); put(day, 2, "T")
            put(msOfDay / 3_600_000, 2, ":"); put(msOfDay / 60_000 % 60, 2, ":"); put(msOfDay / 1000 % 60, 2, ".")
            put(msOfDay % 1000, 3, "Z")
            return o
        }
    }

    /// Year, month and day of the proleptic Gregorian calendar for days since 1970-01-01
    /// (H. Hinnant's `civil_from_days`).
    static func civil(fromDays z0: Int64) -> (Int64, Int64, Int64) {
        let z = z0 + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    /// nil for 0 ("never").
    public static func isoOrNil(ms: Int64) -> String? { ms > 0 ? iso(ms: ms) : nil }

    /// Parses an RFC 3339 date-time (`2026-05-01T12:00:00Z`, `2026-05-01T14:00:00.5+02:00`; `t`,
    /// `z` and a space for `T` are accepted, as RFC 3339 allows) into milliseconds since the epoch
    /// (fractions beyond milliseconds are cut). Nil for anything else, including impossible dates
    /// and leap seconds.
    public static func parseRFC3339(_ text: String) -> Int64? {
        let u = Array(text.utf8)
        guard u.count >= 20, u.count <= 40 else { return nil }
        func digits(_ at: Int, _ n: Int) -> Int64? {
            guard at + n <= u.count else { return nil }
            var v: Int64 = 0
            for c in u[at..<(at + n)] {
                guard c >= 0x30 && c <= 0x39 else { return nil }
                v = v * 10 + Int64(c - 0x30)
            }
            return v
        }
        guard let year = digits(0, 4), u[4] == UInt8(ascii: "-"), let month = digits(5, 2), u[7] == UInt8(ascii: "-"),
              let day = digits(8, 2), [UInt8(ascii: "T"), UInt8(ascii: "t"), UInt8(ascii: " ")].contains(u[10]),
              let hour = digits(11, 2), u[13] == UInt8(ascii: ":"), let minute = digits(14, 2), u[16] == UInt8(ascii: ":"),
              let second = digits(17, 2) else { return nil }
        guard (1...12).contains(month), day >= 1, day <= daysIn(month: month, year: year), hour < 24, minute < 60, second < 60 else { return nil }
        var i = 19, millis: Int64 = 0
        if i < u.count, u[i] == UInt8(ascii: ".") {
            i += 1
            let start = i
            while i < u.count, u[i] >= 0x30, u[i] <= 0x39 {
                if i - start < 3 { millis = millis * 10 + Int64(u[i] - 0x30) }
                i += 1
            }
            guard i > start else { return nil }
            for _ in 0..<max(0, 3 - (i - start)) { millis *= 10 }
        }
        guard i < u.count else { return nil }
        var offset: Int64 = 0
        if u[i] == UInt8(ascii: "Z") || u[i] == UInt8(ascii: "z") {
            i += 1
        } else if u[i] == UInt8(ascii: "+") || u[i] == UInt8(ascii: "-") {
            guard let oh = digits(i + 1, 2), i + 3 < u.count, u[i + 3] == UInt8(ascii: ":"), let om = digits(i + 4, 2), oh < 24, om < 60 else { return nil }
            offset = (oh * 60 + om) * 60_000 * (u[i] == UInt8(ascii: "-") ? -1 : 1)
            i += 6
        } else {
            return nil
        }
        guard i == u.count else { return nil }
        let days = daysFromCivil(year: year, month: month, day: day)
        return ((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millis - offset
    }

    static func daysIn(month: Int64, year: Int64) -> Int64 {
        switch month {
        case 2: (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
    static func daysFromCivil(year y0: Int64, month m: Int64, day d: Int64) -> Int64 {
        let y = m <= 2 ? y0 - 1 : y0
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }
}

extension Int64 {
    /// Quotient rounded towards minus infinity, and the matching non-negative remainder.
    func floorDivided(by d: Int64) -> (Int64, Int64) {
        let (q, r) = quotientAndRemainder(dividingBy: d)
        return r < 0 ? (q - 1, r + d) : (q, r)
    }
}
