import Foundation
import MeshProto

/// A device's lifecycle: whether it takes part in the mesh, why not, and when it expires. The rules
/// of suspending, resuming, expiring and extending are pure functions of this value and the
/// storage's clock, so every replica and every storage backend applies exactly these.
///
/// - A suspended device (by its owner, by an admin, or because its expiry passed) keeps its keys,
///   addresses, name and plan slot; it is published with `active = false`, so no node holds it and
///   the mesh DNS does not name it (``PeerCatalog/deviceInMesh(_:settings:)``).
/// - Resuming is refused while the expiry has passed: an admin extends it first (a device that was
///   suspended *because* it expired comes back with the extension). This avoids the trap of a
///   re-enabled expired client that silently flips back at the next sweep.
/// - Only an admin lifts an admin's suspension.
public struct DeviceLifecycle: Sendable, Equatable {
    /// When the device was suspended; nil while it is active.
    public var suspendedAt: Date?
    /// Why (``Mesh_V1_SuspendReason/unspecified`` while active).
    public var suspendReason: Mesh_V1_SuspendReason
    /// When the device expires; nil: never.
    public var expiresAt: Date?

    /// The longest a device may be given, from now (and the longest default lifetime).
    public static let maxLifetime: TimeInterval = 3650 * 86_400
    /// The shortest default lifetime a tenant may set.
    public static let minDefaultLifetime: TimeInterval = 3600

    public init(suspendedAt: Date? = nil, suspendReason: Mesh_V1_SuspendReason = .unspecified, expiresAt: Date? = nil) {
        self.suspendedAt = suspendedAt
        self.suspendReason = suspendedAt == nil ? .unspecified : suspendReason
        self.expiresAt = expiresAt
    }

    /// Whether the device takes part in the mesh.
    public var isActive: Bool { suspendedAt == nil }

    /// The status shown to people: active, suspended (by a person) or expired.
    public var status: Mesh_V1_DeviceStatus {
        guard suspendedAt != nil else { return .active }
        return suspendReason == .expired ? .expired : .suspended
    }

    /// Whether the expiry has passed at `now`.
    public func isPastExpiry(at now: Date) -> Bool {
        expiresAt.map { $0 <= now } ?? false
    }

    /// A suspension by a caller who may manage the device. Nil when nothing changes (already
    /// suspended, or expired). An admin's suspension replaces the owner's, so that the owner can no
    /// longer lift it.
    public func suspend(byAdmin: Bool, at now: Date) -> DeviceLifecycle? {
        switch status {
        case .active:
            return DeviceLifecycle(suspendedAt: now, suspendReason: byAdmin ? .admin : .user, expiresAt: expiresAt)
        case .suspended where byAdmin && suspendReason == .user:
            return DeviceLifecycle(suspendedAt: suspendedAt, suspendReason: .admin, expiresAt: expiresAt)
        default:
            return nil
        }
    }

    /// Resuming a suspended device. Nil when it is active already. Throws `failedPrecondition` while
    /// the expiry has passed, and `permissionDenied` for an owner lifting an admin's suspension.
    public func resume(byAdmin: Bool, at now: Date) throws(MeshError) -> DeviceLifecycle? {
        guard !isActive else { return nil }
        if status == .expired || isPastExpiry(at: now) {
            let when = expiresAt.map { " at \(Timestamp.iso(ms: $0.unixMilliseconds))" } ?? ""
            throw .failedPrecondition("this device expired\(when); an admin must extend its expiry before it can be resumed")
        }
        if suspendReason == .admin && !byAdmin {
            throw .permissionDenied("an admin suspended this device; only an admin can resume it")
        }
        return DeviceLifecycle(expiresAt: expiresAt)
    }

    /// The sweeper's step: an active device whose expiry has passed is suspended as expired. Nil
    /// when it is not due (or not active).
    public func expire(at now: Date) -> DeviceLifecycle? {
        guard isActive, isPastExpiry(at: now) else { return nil }
        return DeviceLifecycle(suspendedAt: now, suspendReason: .expired, expiresAt: expiresAt)
    }

    /// A new expiry (nil: never), set by an admin (or by re-issuing a config). It must lie in the
    /// future, within ``maxLifetime``. A device suspended because it expired is active again; one a
    /// person suspended stays suspended. Nil when nothing changes.
    public func withExpiry(_ new: Date?, at now: Date) throws(MeshError) -> DeviceLifecycle? {
        if let new { try Self.checkFuture(new, at: now) }
        var next = self
        next.expiresAt = new
        if status == .expired {
            next.suspendedAt = nil
            next.suspendReason = .unspecified
        }
        return next == self ? nil : next
    }

    /// A re-issued config renews the device's lifetime as a new device's would be: with a tenant
    /// default lifetime, the expiry moves to `now + lifetime` unless it is later already (or never);
    /// a device suspended because it expired comes back. Nil when nothing changes (no default
    /// lifetime, or a later expiry). It never shortens an expiry and never gives one to a device
    /// that has none; a suspension by a person stays.
    public func renewedByReissue(defaultLifetime: TimeInterval, at now: Date) -> DeviceLifecycle? {
        guard defaultLifetime > 0, defaultLifetime <= Self.maxLifetime else { return nil }
        let renewed = now.addingTimeInterval(defaultLifetime)
        guard let current = expiresAt, current < renewed else { return nil }
        return try? withExpiry(renewed, at: now)
    }

    /// The expiry of a new device: the one asked for, else the tenant's default lifetime from now,
    /// else none. A caller who is not an admin may not go beyond the tenant's default lifetime.
    public static func initialExpiry(requested: Date?, defaultLifetime: TimeInterval?, callerIsAdmin: Bool, now: Date) throws(MeshError) -> Date? {
        let lifetime = defaultLifetime.flatMap { $0 > 0 ? $0 : nil }
        guard let requested else { return lifetime.map { now.addingTimeInterval($0) } }
        try checkFuture(requested, at: now)
        if let lifetime, !callerIsAdmin, requested > now.addingTimeInterval(lifetime) {
            throw .invalidArgument(field: "expires_at",
                                   message: "expires_at may be at most \(describe(lifetime)) away: that is this tenant's device lifetime (an admin may choose a later time)")
        }
        return requested
    }

    /// Validates a tenant's default lifetime in seconds (0: off).
    public static func validateDefaultLifetime(_ seconds: Int, field: String = "device_lifetime_seconds") throws(MeshError) -> Int {
        guard seconds == 0 || (Double(seconds) >= minDefaultLifetime && Double(seconds) <= maxLifetime) else {
            throw .invalidArgument(field: field, message: "\(field) must be 0 (off) or between \(Int(minDefaultLifetime)) (1 hour) and \(Int(maxLifetime)) (10 years)")
        }
        return seconds
    }

    static func checkFuture(_ at: Date, at now: Date) throws(MeshError) {
        guard at > now else {
            throw .invalidArgument(field: "expires_at", message: "expires_at must be in the future (it is \(Timestamp.iso(ms: at.unixMilliseconds)); now is \(Timestamp.iso(ms: now.unixMilliseconds)))")
        }
        guard at.timeIntervalSince(now) <= maxLifetime else {
            throw .invalidArgument(field: "expires_at", message: "expires_at must be within 10 years")
        }
    }

    /// "30 days", "12 hours", "90 minutes".
    public static func describe(_ seconds: TimeInterval) -> String {
        let s = Int(seconds)
        if s % 86_400 == 0 { return s == 86_400 ? "1 day" : "\(s / 86_400) days" }
        if s % 3600 == 0 { return s == 3600 ? "1 hour" : "\(s / 3600) hours" }
        if s % 60 == 0 { return s == 60 ? "1 minute" : "\(s / 60) minutes" }
        return "\(s) seconds"
    }
}

extension Mesh_V1_DeviceStatus {
    /// "active", "suspended" or "expired".
    public var key: String {
        switch self {
        case .active: "active"
        case .suspended: "suspended"
        case .expired: "expired"
        default: "unspecified"
        }
    }

    public init?(key: String) {
        switch key {
        case "active": self = .active
        case "suspended": self = .suspended
        case "expired": self = .expired
        default: return nil
        }
    }
}

extension Mesh_V1_SuspendReason {
    /// "user", "admin" or "expired" (what the database stores and the API shows).
    public var key: String {
        switch self {
        case .user: "user"
        case .admin: "admin"
        case .expired: "expired"
        default: "unspecified"
        }
    }

    public init?(key: String) {
        switch key {
        case "user": self = .user
        case "admin": self = .admin
        case "expired": self = .expired
        default: return nil
        }
    }
}
