import Foundation
import MeshProto

// The rules of people's accounts: browser sessions, personal API tokens, invitations, which user a
// sign-in lands on, and what admins may do to users. Pure: ProvisionSvc and the gateway apply them
// to what they read and verified.

/// A browser session: short-lived, renewed while the person is active, never longer than
/// `maximum` after sign-in.
public struct SessionPolicy: Sendable, Equatable {
    /// A session not used for this long ends.
    public var idle: Duration
    /// A session ends this long after sign-in, however active.
    public var maximum: Duration

    /// 30 minutes idle, 12 hours at most.
    public static let standard = SessionPolicy(idle: .seconds(1800), maximum: .seconds(12 * 3600))

    public init(idle: Duration, maximum: Duration) {
        self.idle = idle
        self.maximum = maximum
    }

    /// What a request finds its session in.
    public enum State: Sendable, Equatable {
        case active
        /// Active, and past half its idle window: the cookie is re-issued until `idleExpires`.
        case renew(idleExpires: Date)
        case expired
    }

    /// Where a session with these limits stands at `now`.
    public func state(idleExpires: Date, absoluteExpires: Date, now: Date) -> State {
        guard now < idleExpires, now < absoluteExpires else { return .expired }
        let next = min(now.addingTimeInterval(idle.seconds), absoluteExpires)
        if idleExpires.timeIntervalSince(now) < idle.seconds / 2 && next > idleExpires { return .renew(idleExpires: next) }
        return .active
    }

    /// The first idle expiry of a session opened at `now`.
    public func firstIdleExpiry(now: Date, absoluteExpires: Date) -> Date {
        min(now.addingTimeInterval(idle.seconds), absoluteExpires)
    }
}

extension Duration {
    /// Seconds as a `TimeInterval`.
    public var seconds: TimeInterval { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

/// Personal API tokens: `qmp_` + 30 base62 characters of randomness + 6 base62 characters of the
/// CRC-32 of those 30. The checksum lets a typo or a truncated token be refused without a lookup,
/// and lets secret scanners recognise a token. Only the token's SHA-256 is stored.
public enum APITokenFormat {
    public static let prefix = "qmp_"
    public static let secretLength = 30
    public static let checksumLength = 6
    /// `qmp_` + 30 + 6.
    public static let length = 4 + secretLength + checksumLength
    static let alphabet = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)

    /// A new token from `rng` (about 178 bits of randomness).
    public static func make(using rng: inout some RandomNumberGenerator) -> String {
        var secret: [UInt8] = []
        secret.reserveCapacity(secretLength)
        for _ in 0..<secretLength { secret.append(alphabet[Int.random(in: 0..<62, using: &rng)]) }
        return prefix + String(decoding: secret, as: UTF8.self) + checksum(of: secret)
    }

    /// Whether `token` has the shape and a correct checksum.
    public static func isWellFormed(_ token: String) -> Bool {
        let b = Array(token.utf8)
        guard b.count == length, token.hasPrefix(prefix) else { return false }
        let secret = Array(b[4..<(4 + secretLength)])
        guard (secret + b[(4 + secretLength)...]).allSatisfy({ alphabet.contains($0) }) else { return false }
        return checksum(of: secret) == String(decoding: b[(4 + secretLength)...], as: UTF8.self)
    }

    /// What a list shows of a token: `qmp_` and its first four characters.
    public static func displayPrefix(_ token: String) -> String { String(token.prefix(8)) }

    /// Base62 of the CRC-32, left-padded to six characters.
    static func checksum(of secret: [UInt8]) -> String {
        var v = UInt64(CRC32.checksum(secret))
        var out = [UInt8](repeating: alphabet[0], count: checksumLength)
        var i = checksumLength - 1
        while v > 0 && i >= 0 {
            out[i] = alphabet[Int(v % 62)]
            v /= 62
            i -= 1
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// CRC-32 (IEEE 802.3, reflected, as zlib computes it).
public enum CRC32 {
    static let table: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    public static func checksum(_ bytes: some Sequence<UInt8>) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes { c = table[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }
}

/// Names, lifetimes and numbers of API tokens.
public enum APITokenRules {
    /// Tokens live this long unless asked otherwise.
    public static let defaultTTL: Duration = .seconds(90 * 86400)
    public static let maximumTTL: Duration = .seconds(365 * 86400)
    /// Live tokens one user may hold.
    public static let perUser = 50

    /// The token's name (1–64 characters) and its lifetime (1 hour to 365 days; 0 means the default).
    public static func validate(name: String, ttlSeconds: UInt32) throws(MeshError) -> (String, Duration) {
        // At most 64 code points as sent (what the API's schema counts), at least one after trimming.
        let n = name.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !n.isEmpty, name.unicodeScalars.count <= 64, !n.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw .invalidArgument(field: "name", message: "name must be 1 to 64 characters")
        }
        if ttlSeconds == 0 { return (n, defaultTTL) }
        guard ttlSeconds >= 3600, Int(ttlSeconds) <= Int(maximumTTL.components.seconds) else {
            throw .invalidArgument(field: "expires_in_days", message: "a token lives between 1 hour and 365 days")
        }
        return (n, .seconds(Int(ttlSeconds)))
    }

    /// Refuses one more token when the user holds `live` already.
    public static func checkCount(live: Int) throws(MeshError) {
        guard live < perUser else { throw .failedPrecondition("a user holds at most \(perUser) API tokens: revoke one first") }
    }
}

/// Whether a caller's credential still stands, from what storage holds about it.
public enum CredentialRules {
    /// The stored state of a session or an API token; nil fields for one that is gone.
    public struct Stored: Sendable, Equatable {
        public var exists: Bool
        public var revoked: Bool
        public var expires: Date?

        public init(exists: Bool, revoked: Bool = false, expires: Date? = nil) {
            self.exists = exists
            self.revoked = revoked
            self.expires = expires
        }
    }

    /// The user must be active (an invited user has not signed in, so nothing can speak for them).
    public static func checkUser(exists: Bool, status: Mesh_V1_UserStatus) throws(MeshError) {
        guard exists else { throw .unauthenticated("this user no longer exists") }
        guard status == .active else { throw .unauthenticated("this user has not accepted the invitation yet") }
    }

    public static func checkSession(_ s: Stored, now: Date) throws(MeshError) {
        guard s.exists, !s.revoked else { throw .unauthenticated("your session has ended: sign in again") }
        if let e = s.expires, e <= now { throw .unauthenticated("your session has expired: sign in again") }
    }

    public static func checkAPIToken(_ t: Stored, now: Date) throws(MeshError) {
        guard t.exists else { throw .unauthenticated("unknown API token") }
        guard !t.revoked else { throw .unauthenticated("this API token was revoked") }
        if let e = t.expires, e <= now { throw .unauthenticated("this API token has expired") }
    }
}

/// Invitations: an admin names a person by email or by their subject at the provider.
public enum InvitationRules {
    public static let defaultTTL: Duration = .seconds(7 * 86400)
    public static let maximumTTL: Duration = .seconds(90 * 86400)

    /// What an invitation holds once checked.
    public struct Invitation: Sendable, Equatable {
        public var email: String?
        public var subject: String?
        public var issuer: String?
        public var role: Mesh_V1_Role
        public var name: String
        public var ttl: Duration
    }

    /// Exactly one of email and subject; the email lowercased; a known role; a lifetime up to 90 days.
    public static func validate(email: String, subject: String, issuer: String, role: Mesh_V1_Role, name: String,
                                ttlSeconds: UInt32) throws(MeshError) -> Invitation {
        // Lengths count the values as sent, before trimming: that is what the API's schema bounds.
        guard email.utf8.count <= 254 else { throw .invalidArgument(field: "email", message: "email is at most 254 bytes") }
        guard subject.utf8.count <= 255 else { throw .invalidArgument(field: "subject", message: "subject is at most 255 bytes") }
        guard issuer.utf8.count <= 512 else { throw .invalidArgument(field: "issuer", message: "issuer is at most 512 bytes") }
        let e = normalizeEmail(email), s = subject.trimmingCharacters(in: .whitespaces)
        guard e.isEmpty != s.isEmpty else {
            throw .invalidArgument(field: e.isEmpty ? "email" : "subject", message: "invite by email or by subject, one of the two")
        }
        if !e.isEmpty {
            let parts = e.split(separator: "@", omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, parts[1].contains("."), e.utf8.count <= 254, !e.contains(" ") else {
                throw .invalidArgument(field: "email", message: "email must be an address like name@example.com")
            }
        }
        let iss = issuer.trimmingCharacters(in: .whitespaces)
        // An issuer URL: http(s), a host, at most 512 bytes of printable ASCII (a URI has no other).
        let hostStart = iss.hasPrefix("https://") ? 8 : iss.hasPrefix("http://") ? 7 : 0
        guard iss.isEmpty || (s.isEmpty == false && hostStart > 0 && iss.utf8.count <= 512 && iss.utf8.count > hostStart
                              && iss.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) && iss.utf8.dropFirst(hostStart).first != UInt8(ascii: "/")) else {
            throw .invalidArgument(field: "issuer", message: "issuer goes with subject and must be the provider's issuer URL (http or https, at most 512 bytes)")
        }
        guard role == .owner || role == .admin else { throw .invalidArgument(field: "role", message: "role must be owner or admin") }
        // A name given is refused when too long (counted in code points, as JSON Schema counts); one
        // made from the email or subject is shortened.
        guard name.unicodeScalars.count <= 63 else { throw .invalidArgument(field: "name", message: "name is at most 63 characters") }
        let shown = name.trimmingCharacters(in: .whitespaces).isEmpty ? (e.isEmpty ? s : e) : name
        let display = try DisplayName.validate(String(shown.prefix(63)), field: "name")
        var ttl = defaultTTL
        if ttlSeconds > 0 {
            guard ttlSeconds >= 3600, Int(ttlSeconds) <= Int(maximumTTL.components.seconds) else {
                throw .invalidArgument(field: "ttl", message: "an invitation lasts between 1 hour and 90 days")
            }
            ttl = .seconds(Int(ttlSeconds))
        }
        return Invitation(email: e.isEmpty ? nil : e, subject: s.isEmpty ? nil : s, issuer: iss.isEmpty ? nil : iss, role: role, name: display, ttl: ttl)
    }

    public static func normalizeEmail(_ e: String) -> String { e.trimmingCharacters(in: .whitespacesAndNewlines).lowercased() }
}

/// Which user a verified sign-in lands on.
public enum SignInBinding {
    /// What the ID token said, as ProvisionSvc receives it.
    public struct Facts: Sendable, Equatable {
        public var issuer: String
        public var subject: String
        public var email: String
        public var emailVerified: Bool
        public var name: String
        /// The tenant the provider names, if it names one.
        public var tenant: UUID?
        /// The role the provider decides, or `.unspecified`.
        public var providerRole: Mesh_V1_Role

        public init(issuer: String, subject: String, email: String, emailVerified: Bool, name: String, tenant: UUID?, providerRole: Mesh_V1_Role) {
            self.issuer = issuer
            self.subject = subject
            self.email = email
            self.emailVerified = emailVerified
            self.name = name
            self.tenant = tenant
            self.providerRole = providerRole
        }

        /// What the user is called when nothing else names them: the name, else the email, else the subject.
        public var displayName: String {
            for c in [name, email, subject] {
                let t = c.trimmingCharacters(in: .whitespacesAndNewlines)
                if !t.isEmpty, let v = try? DisplayName.validate(String(t.prefix(63)), field: "name") { return v }
            }
            return "user"
        }
    }

    /// A pending invitation that might match.
    public struct Invitation: Sendable, Equatable {
        public var user: UUID
        public var tenant: UUID
        public var email: String?
        public var subject: String?
        public var issuer: String?
        public var role: Mesh_V1_Role
        public var created: Date
        public var expires: Date

        public init(user: UUID, tenant: UUID, email: String?, subject: String?, issuer: String?, role: Mesh_V1_Role, created: Date, expires: Date) {
            self.user = user
            self.tenant = tenant
            self.email = email
            self.subject = subject
            self.issuer = issuer
            self.role = role
            self.created = created
            self.expires = expires
        }
    }

    /// A user already bound to the identity.
    public struct Bound: Sendable, Equatable {
        public var user: UUID
        public var tenant: UUID
        public var role: Mesh_V1_Role

        public init(user: UUID, tenant: UUID, role: Mesh_V1_Role) {
            self.user = user
            self.tenant = tenant
            self.role = role
        }
    }

    /// The outcome.
    public enum Decision: Sendable, Equatable {
        /// The identity's user signs in; `role` is set when the provider changes it.
        case existing(user: UUID, tenant: UUID, newRole: Mesh_V1_Role?)
        /// The invitation is bound to the identity and becomes an active user.
        case bind(user: UUID, tenant: UUID, role: Mesh_V1_Role)
        /// A new user of the tenant the provider names.
        case create(tenant: UUID, role: Mesh_V1_Role)
    }

    /// The identity's own user first; then an invitation by subject (for this issuer or any), then
    /// one by email — only if the provider verified the email —, the oldest first; then the
    /// provider's tenant. Nothing else admits anyone.
    public static func decide(_ f: Facts, bound: Bound?, invitations: [Invitation], tenantExists: Bool, now: Date) throws(SignInError) -> Decision {
        if let b = bound {
            let role = f.providerRole == .unspecified || f.providerRole == b.role ? nil : f.providerRole
            return .existing(user: b.user, tenant: b.tenant, newRole: role)
        }
        let email = InvitationRules.normalizeEmail(f.email)
        let bySubject = invitations.filter { $0.subject == f.subject && ($0.issuer == nil || $0.issuer == f.issuer) }
        let byEmail = f.emailVerified && !email.isEmpty ? invitations.filter { $0.email == email } : []
        for group in [bySubject, byEmail] {
            if let i = group.filter({ $0.expires > now }).min(by: { ($0.created, $0.user.uuidString) < ($1.created, $1.user.uuidString) }) {
                return .bind(user: i.user, tenant: i.tenant, role: f.providerRole == .unspecified ? i.role : f.providerRole)
            }
        }
        if let t = f.tenant {
            guard tenantExists else { throw .unknownTenant }
            return .create(tenant: t, role: f.providerRole == .unspecified ? .owner : f.providerRole)
        }
        if !(bySubject + byEmail).isEmpty { throw .invitationExpired }
        throw .notInvited
    }
}

/// What an admin may do to the users of their tenant.
public enum UserAdminRules {
    /// A user as the rules see it.
    public struct Member: Sendable, Equatable {
        public var id: UUID
        public var role: Mesh_V1_Role
        public var status: Mesh_V1_UserStatus

        public init(id: UUID, role: Mesh_V1_Role, status: Mesh_V1_UserStatus) {
            self.id = id
            self.role = role
            self.status = status
        }
    }

    static func requireAdmin(_ isAdmin: Bool) throws(MeshError) {
        guard isAdmin else { throw .permissionDenied("only admins manage users") }
    }

    /// Changing a role: admins only, to owner or admin; the tenant keeps at least one active admin.
    public static func checkRoleChange(callerIsAdmin: Bool, target: Member, to role: Mesh_V1_Role, activeAdmins: Int) throws(MeshError) {
        try requireAdmin(callerIsAdmin)
        guard role == .owner || role == .admin else { throw .invalidArgument(field: "role", message: "role must be owner or admin") }
        if target.role == .admin && role != .admin && target.status == .active && activeAdmins <= 1 {
            throw .failedPrecondition("a tenant keeps at least one admin: make another user admin first")
        }
    }

    /// Removing a user: admins only, never themselves; a user with devices needs a decision about
    /// them; devices go only to another active user of the tenant.
    public static func checkRemoval(callerIsAdmin: Bool, caller: UUID, target: Member, devices: Int,
                                    disposition: Mesh_V1_DeviceDisposition, reassignTo: Member?) throws(MeshError) {
        try requireAdmin(callerIsAdmin)
        guard target.id != caller else { throw .failedPrecondition("you cannot remove yourself: ask another admin") }
        switch disposition {
        case .delete:
            break
        case .reassign:
            guard let to = reassignTo else { throw .invalidArgument(field: "reassign_to", message: "reassign_to must be another user of the tenant") }
            guard to.id != target.id else { throw .invalidArgument(field: "reassign_to", message: "devices cannot go to the user being removed") }
            guard to.status == .active else { throw .invalidArgument(field: "reassign_to", message: "devices can only go to a user who has signed in") }
        default:
            guard devices == 0 else {
                throw .invalidArgument(field: "devices", message: "the user has \(devices) device(s): say whether they are deleted or reassigned")
            }
        }
    }
}
