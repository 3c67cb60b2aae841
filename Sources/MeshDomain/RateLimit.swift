import Foundation

/// The provisioning rate limit: at most `limit` device creations (and config re-issues) per user in
/// any sliding window of `window`. The rule is here; the window's log lives in storage, shared by
/// every replica (ProvisionSvc counts under the user's row lock, so the limit is exact).
public struct RateLimit: Sendable, Equatable {
    /// Creations allowed per window; 0 or less disables the limit.
    public var limit: Int
    public var window: Duration

    /// The seed's limit: 5 per minute per user.
    public static let seed = RateLimit(limit: 5, window: .seconds(60))

    public init(limit: Int, window: Duration) {
        self.limit = limit
        self.window = window
    }

    /// Whether the limit applies at all.
    public var isEnabled: Bool { limit > 0 }

    /// Throws `rateLimited` when `recent` creations lie inside the window ending at `now`, the
    /// oldest of them at `oldest`. The retry-after is the whole seconds until that oldest creation
    /// leaves the window (at least 1).
    public func check(recent: Int, oldest: Date?, now: Date) throws(MeshError) {
        guard isEnabled, recent >= limit else { return }
        let windowSeconds = Double(window.components.seconds) + Double(window.components.attoseconds) / 1e18
        let leaves = (oldest ?? now).addingTimeInterval(windowSeconds)
        let retry = max(1, Int((leaves.timeIntervalSince(now)).rounded(.up)))
        throw .rateLimited(retryAfterSeconds: retry)
    }
}
