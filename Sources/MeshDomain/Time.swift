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
}

extension Int64 {
    /// Quotient rounded towards minus infinity, and the matching non-negative remainder.
    func floorDivided(by d: Int64) -> (Int64, Int64) {
        let (q, r) = quotientAndRemainder(dividingBy: d)
        return r < 0 ? (q - 1, r + d) : (q, r)
    }
}
