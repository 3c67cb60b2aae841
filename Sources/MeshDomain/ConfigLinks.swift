import Foundation

// One-time config links and the Pritunl walk-through: pure rules, applied by ProvisionSvc to what
// it reads inside its transactions and by the gateway before it asks anything.

/// A one-time config link's token: `qml_` + 43 base64url characters (32 random bytes). Only its
/// SHA-256 is stored; the link names the device to make, and the device's key is generated when
/// the link is opened, so a link nobody opened leaks nothing.
public enum ConfigLinkFormat {
    public static let prefix = "qml_"
    /// `qml_` + 43.
    public static let length = 4 + 43
    static let alphabet = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    /// A new token from 32 bytes of `rng`.
    public static func make(using rng: inout some RandomNumberGenerator) -> String {
        var bytes = [UInt8](repeating: 0, count: 32)
        for i in bytes.indices { bytes[i] = UInt8.random(in: 0...255, using: &rng) }
        let b64 = Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
        return prefix + b64
    }

    /// Whether `token` has the shape of a link token (anything else cannot name a link).
    public static func isWellFormed(_ token: String) -> Bool {
        let b = Array(token.utf8)
        return b.count == length && token.hasPrefix(prefix) && b[4...].allSatisfy { alphabet.contains($0) }
    }
}

/// How long links live, and what opening one decides.
public struct ConfigLinkPolicy: Sendable, Equatable {
    /// The lifetime of a link made without one.
    public var defaultTTL: Duration
    /// The shortest and longest lifetime a link may ask for.
    public var minimumTTL: Duration
    public var maximumTTL: Duration

    /// One hour by default; one minute to seven days.
    public static let standard = ConfigLinkPolicy(defaultTTL: .seconds(3600), minimumTTL: .seconds(60), maximumTTL: .seconds(7 * 86400))

    public init(defaultTTL: Duration, minimumTTL: Duration, maximumTTL: Duration) {
        self.defaultTTL = defaultTTL
        self.minimumTTL = minimumTTL
        self.maximumTTL = maximumTTL
    }

    /// The lifetime of a new link: `requested` seconds (0: the default) within the bounds.
    public func ttl(requestedSeconds: UInt32) throws(MeshError) -> Duration {
        guard requestedSeconds != 0 else { return defaultTTL }
        let d = Duration.seconds(Int64(requestedSeconds))
        guard d >= minimumTTL, d <= maximumTTL else {
            throw .invalidArgument(field: "expires_in", message: "expires_in must be \(minimumTTL.components.seconds) to \(maximumTTL.components.seconds) seconds")
        }
        return d
    }

    /// Why a stored link can no longer be opened.
    public enum Refusal: String, Sendable, Equatable {
        case used, expired
    }

    /// Whether a stored link may be opened at `now`: once, before it expires.
    public static func decideOpen(usedAt: Date?, expiresAt: Date, now: Date) -> Refusal? {
        if usedAt != nil { return .used }
        if now >= expiresAt { return .expired }
        return nil
    }

    /// The error a refused link answers with (the same for every refusal but its wording).
    public static func error(_ r: Refusal) -> MeshError {
        switch r {
        case .used: .gone("this config link was already used; ask for a new one")
        case .expired: .gone("this config link has expired; ask for a new one")
        }
    }

    /// Who may make a link for `target`: an admin for any user of the tenant, anyone else only for
    /// themselves (any other target is `notFound`, as an unknown user would be).
    public static func checkCreate(callerIsAdmin: Bool, caller: UUID, target: UUID) throws(MeshError) {
        guard callerIsAdmin || caller == target else { throw .notFound("no such user") }
    }
}
