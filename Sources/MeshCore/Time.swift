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
