import Foundation
import MeshDomain
import MeshProto

// The storage ports of ProvisionSvc's services. Each service holds the repository of its concept;
// `PostgresProvisionStore` implements them all on the `provision` schema and
// `InMemoryProvisionStore` in memory, for the unit tests of the rules. An operation that must be
// atomic (check a rule, then write) is one method: it runs the rule, passed in as a pure closure,
// inside the same transaction (PostgreSQL) or actor turn (memory) as the writes.
//
// Every write that changes what nodes see appends its change to the tenant's outbox in the same
// step, numbered by the tenant's revision; the returned revision is the last one written.

/// Tenants and their settings (TenantService).
public protocol TenantRepository: Sendable {
    /// Inserts a tenant; `alreadyExists` when its id is taken.
    func insertTenant(_ t: TenantRecord, audit: AuditEvent) async throws(MeshError)
    func tenant(_ id: UUID) async throws(MeshError) -> TenantRecord?
    func tenants() async throws(MeshError) -> [TenantRecord]
    /// Locks the tenant, applies `change` (nil from it: nothing to write) and, when the settings every
    /// node sees changed, appends them to the outbox. Returns the record after and the revision
    /// written (nil when nothing was published).
    func updateTenant(_ id: UUID, _ change: @escaping @Sendable (TenantRecord) throws(MeshError) -> (TenantRecord, AuditEvent)?)
        async throws(MeshError) -> (tenant: TenantRecord, revision: UInt64?)
}

/// Users (UserService) and the identity of every caller.
public protocol UserRepository: Sendable {
    /// Inserts a user; `notFound` for an unknown tenant, `alreadyExists` for a taken id.
    func insertUser(_ u: Mesh_V1_User, audit: AuditEvent) async throws(MeshError) -> Mesh_V1_User
    func user(tenant: UUID, id: UUID) async throws(MeshError) -> Mesh_V1_User?
    func users(tenant: UUID) async throws(MeshError) -> [Mesh_V1_User]
    /// The caller's role with its tenant's plan and SAML gate, and the state of its credential, in
    /// one read.
    func identify(tenant: UUID, user: UUID, credential: CallerCredential) async throws(MeshError) -> CallerLookup
}

/// Sign-in, sessions, API tokens and the administration of users (AccountService).
public protocol AccountRepository: Sendable {
    /// Records a sign-in attempt; returns when it expires.
    func startSignIn(attempt: [UInt8], provider: String, ttl: Duration) async throws(MeshError) -> Date
    /// Consumes an attempt: true exactly once for a recorded, unexpired attempt of `provider`.
    func finishSignIn(attempt: [UInt8], provider: String) async throws(MeshError) -> Bool
    /// With the identity serialised (and its candidate invitations locked): reads the identity's
    /// user, the invitations that might match and whether the named tenant exists, lets `decide`
    /// pick, then writes the binding or the new user, opens the session and audits both.
    func signIn(_ draft: SignInDraft,
                decide: @escaping @Sendable (SignInBinding.Bound?, [SignInBinding.Invitation], Bool, Date) throws(SignInError) -> SignInBinding.Decision)
        async throws(MeshError) -> (user: Mesh_V1_User, expires: Date, decision: SignInBinding.Decision)
    /// Ends a session of `user` (idempotent) and audits it.
    func endSession(_ id: UUID, user: UUID, tenant: UUID, requestID: String) async throws(MeshError)

    /// With the user locked: `check` sees how many live tokens the user holds; then the token is stored.
    func createAPIToken(_ t: APITokenRecord, requestID: String, check: @escaping @Sendable (Int) throws(MeshError) -> Void)
        async throws(MeshError) -> APITokenRecord
    /// The user's tokens that are not revoked, newest first.
    func apiTokens(user: UUID) async throws(MeshError) -> [APITokenRecord]
    /// Revokes a token of the tenant that `authorize` accepts; `notFound` for any other.
    func revokeAPIToken(_ id: UUID, tenant: UUID, actor: String, requestID: String,
                        authorize: @escaping @Sendable (APITokenRecord) throws(MeshError) -> Void) async throws(MeshError)
    /// The token with this hash and its user (role, status), recording its use when it is valid at the
    /// storage's clock (returned too).
    func authenticateAPIToken(hash: [UInt8]) async throws(MeshError) -> (token: APITokenRecord?, user: Mesh_V1_User?, now: Date)

    /// Inserts an invited user; `alreadyExists` when the tenant already has a user or a pending
    /// invitation for that email or subject.
    func inviteUser(_ u: Mesh_V1_User, ttl: Duration, audit: AuditEvent) async throws(MeshError) -> Mesh_V1_User
    /// With the tenant's users locked: `check` sees the target and the number of active admins.
    func setRole(_ user: UUID, tenant: UUID, role: Mesh_V1_Role, actor: String, requestID: String,
                 check: @escaping @Sendable (Mesh_V1_User, Int) throws(MeshError) -> Void) async throws(MeshError) -> Mesh_V1_User
    /// With the tenant locked: `check` sees the target, its device count and the reassignment
    /// target; then the devices are deleted (removals appended, releases recorded) or reassigned
    /// (upserts appended), and the user (with its sessions and tokens) is deleted.
    func deleteUser(_ user: UUID, tenant: UUID, disposition: Mesh_V1_DeviceDisposition, reassignTo: UUID?, actor: String, requestID: String,
                    check: @escaping @Sendable (Mesh_V1_User, Int, Mesh_V1_User?) throws(MeshError) -> Void) async throws(MeshError) -> UserRemoval
}

/// What a device operation reads and decides with the tenant locked.
public struct DeviceDraft: Sendable {
    public var id: UUID
    public var caller: CallerIdentity
    public var label: String
    public var type: Mesh_V1_DeviceType
    public var publicKey: String
    public var ipv4: String
    public var ipv6: String
    public var slugBase: String
    /// The rate-limit window to count and record the creation in; nil when the caller is exempt.
    public var rateWindow: Duration?
    public var requestID: String
    /// The expiry the caller asked for (nil: the tenant's default lifetime, if any); the decision
    /// checks it against the storage's clock.
    public var requestedExpiry: Date? = nil
}

/// Which devices a listing wants: filters and one page, oldest first.
public struct DeviceQuery: Sendable, Equatable {
    /// One device only (the single-device read).
    public var id: UUID?
    public var owner: UUID?
    public var status: Mesh_V1_DeviceStatus?
    public var type: Mesh_V1_DeviceType?
    /// Devices after this one (a previous page's ``DevicePage/next``).
    public var after: DeviceCursor?
    /// Page size; nil: every device.
    public var limit: Int?
    /// Only what a listing shows (`DEVICE_VIEW_LISTING`): a storage may then leave the devices'
    /// public key, config hub and listed nodes empty, and need not read them.
    public var listing = false

    public init(id: UUID? = nil, owner: UUID? = nil, status: Mesh_V1_DeviceStatus? = nil, type: Mesh_V1_DeviceType? = nil,
                after: DeviceCursor? = nil, limit: Int? = nil, listing: Bool = false) {
        self.id = id
        self.owner = owner
        self.status = status
        self.type = type
        self.after = after
        self.limit = limit
        self.listing = listing
    }

    /// Every device the caller may see.
    public static let all = DeviceQuery()
}

/// A position in the device list's order (creation time, then id). Its text form is opaque to
/// clients.
public struct DeviceCursor: Sendable, Equatable {
    /// Creation time in microseconds since the epoch (the database's precision, exactly).
    public var createdMicros: Int64
    public var id: UUID

    public init(createdMicros: Int64, id: UUID) {
        self.createdMicros = createdMicros
        self.id = id
    }

    /// The list's order, as PostgreSQL sorts `(created_at, id)`: by time, then by the id's 16 bytes.
    public func precedes(_ other: DeviceCursor) -> Bool {
        if createdMicros != other.createdMicros { return createdMicros < other.createdMicros }
        return withUnsafeBytes(of: id.uuid) { a in
            withUnsafeBytes(of: other.id.uuid) { b in a.lexicographicallyPrecedes(b) }
        }
    }

    /// The opaque text: base64url of "d1:<micros>:<id>".
    public var text: String {
        Data("d1:\(createdMicros):\(id.lowercased)".utf8).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    /// Parses ``text``; nil for anything else.
    public init?(text: String) {
        guard text.count <= 128 else { return nil }
        var b64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while b64.count % 4 != 0 { b64 += "=" }
        guard let data = Data(base64Encoded: b64), let plain = String(data: data, encoding: .utf8) else { return nil }
        let parts = plain.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "d1", let micros = Int64(parts[1]), let id = UUID(text: String(parts[2])) else { return nil }
        self.init(createdMicros: micros, id: id)
    }
}

/// One page of devices, with where the next one starts (nil: this was the last).
public struct DevicePage: Sendable {
    public var caller: CallerIdentity
    public var tenant: TenantRecord
    public var devices: [DeviceRecord]
    public var next: DeviceCursor?
}

/// A lifecycle change a rule decided: the device's next lifecycle and the audit entry.
public struct LifecycleChange: Sendable {
    public var lifecycle: DeviceLifecycle
    public var audit: AuditEvent

    public init(lifecycle: DeviceLifecycle, audit: AuditEvent) {
        self.lifecycle = lifecycle
        self.audit = audit
    }
}

/// A device the expiry sweeper suspended, with the revision of its change.
public struct ExpiredDevice: Sendable, Equatable {
    public var tenant: UUID
    public var device: UUID
    public var revision: UInt64
}

/// Filters of the audit log.
public struct AuditFilter: Sendable, Equatable {
    /// An action, or a family without a dot ("device" is every "device.*").
    public var action: String?
    /// An actor, exactly.
    public var actor: String?

    public init(action: String? = nil, actor: String? = nil) {
        self.action = action
        self.actor = actor
    }

    /// Whether an entry passes (the in-memory store's form of the SQL condition).
    public func matches(action a: String, actor who: String) -> Bool {
        if let actor, actor != who { return false }
        guard let action else { return true }
        return action.contains(".") ? a == action : (a == action || a.hasPrefix(action + "."))
    }
}

/// A device that was written, with the revision of its change.
public struct WrittenDevice: Sendable {
    public var device: DeviceRecord
    public var tenant: TenantRecord
    public var config: [PeerCatalog.ConfigPeer]
    public var revision: UInt64
}

/// Devices (DeviceService).
public protocol DeviceRepository: Sendable {
    /// A cheap, unlocked look at the cap and the rate limit before anything is allocated, with the
    /// storage's clock (the rate limit's window is measured on it).
    func creationCounts(tenant: UUID, user: UUID, window: Duration?) async throws(MeshError) -> (devices: Int, recent: Int, oldest: Date?, now: Date)
    /// With the tenant (and, for the rate limit, the user) locked: reads the state, lets `decide`
    /// apply the rules, writes the device, its name, the rate-limit event, the outbox change and the
    /// audit entry, and drops the lease hold.
    func createDevice(_ draft: DeviceDraft,
                      decide: @escaping @Sendable (DeviceCreationState) throws(MeshError) -> DeviceCreationDecision) async throws(MeshError) -> WrittenDevice
    /// With the tenant locked: the device must exist in the caller's tenant and `authorize` must
    /// accept it; deletes it (its name and stats too), appends the removal, records the lease
    /// release and the audit entry.
    func deleteDevice(_ id: UUID, caller: CallerIdentity, requestID: String,
                      authorize: @escaping @Sendable (DeviceRecord) throws(MeshError) -> Void) async throws(MeshError) -> (DeviceRecord, UInt64)
    /// With the tenant locked: a new label and the first free slug of `slugBase` (`authorize` first);
    /// the change is published when the slug changed.
    func renameDevice(_ id: UUID, caller: CallerIdentity, label: String, slugBase: String, requestID: String,
                      authorize: @escaping @Sendable (DeviceRecord) throws(MeshError) -> Void) async throws(MeshError) -> (DeviceRecord, TenantRecord, UInt64?)
    /// With the tenant locked: the device must exist in the caller's tenant; `change` sees it and the
    /// storage's clock, checks who may do what, and returns its next lifecycle with the audit entry
    /// (nil: nothing changes). Writes it, and appends the device's change when it joins or leaves the
    /// mesh. Returns the device after, the tenant and the revision written (nil: none).
    func changeLifecycle(_ id: UUID, caller: CallerIdentity,
                         change: @escaping @Sendable (DeviceRecord, Date) throws(MeshError) -> LifecycleChange?) async throws(MeshError)
        -> (DeviceRecord, TenantRecord, UInt64?)
    /// Suspends devices whose expiry has passed, at most `limit`, each exactly once however many
    /// replicas sweep at the same time: per tenant, with the tenant locked, it claims the due devices
    /// (`FOR UPDATE SKIP LOCKED`), lets `expire` decide each, and writes the suspension, the outbox
    /// change and the audit entry in that one transaction.
    func expireDevices(limit: Int, expire: @escaping @Sendable (DeviceLifecycle, Date) -> DeviceLifecycle?) async throws(MeshError)
        -> [ExpiredDevice]
    /// With the tenant (and, for the rate limit, the user) locked: the device must exist in the
    /// caller's tenant and `authorize` must accept it; `decide` picks the new config (the rate limit is
    /// checked there); writes the new key and config (the device is no longer outdated), the
    /// rate-limit event, the outbox change (nodes drop the old key) and the audit entry.
    func reissueDevice(_ id: UUID, caller: CallerIdentity, publicKey: String, rateWindow: Duration?, requestID: String,
                       authorize: @escaping @Sendable (DeviceRecord) throws(MeshError) -> Void,
                       decide: @escaping @Sendable (DeviceCreationState, DeviceRecord) throws(MeshError) -> DeviceCreationDecision)
        async throws(MeshError) -> WrittenDevice
    /// One device of the caller's tenant.
    func device(_ id: UUID, tenant: UUID) async throws(MeshError) -> DeviceRecord?
    /// One page of the devices the caller may see (all for an admin, their own otherwise) with the
    /// tenant and the caller's check (as ``UserRepository/identify(tenant:user:credential:)``), in one
    /// read, with the owners' names; a nil page when the caller is not a user of the tenant (or the
    /// tenant does not exist).
    func devices(visibleTo user: UUID, tenant: UUID, credential: CallerCredential, query: DeviceQuery) async throws(MeshError) -> (CallerLookup, DevicePage?)
    /// Applies a node's handshake report to the per-peer counters and the devices; `notFound` for a
    /// node the tenant does not have. Returns the tenant's mesh domain and the devices whose last
    /// handshake or endpoint changed (as stored after the report), for the status events.
    func applyReport(tenant: UUID, node: UUID, peers: [Mesh_V1_PeerStats]) async throws(MeshError) -> (domain: String, changed: [DeviceRecord])
}

/// A node registration, as the rules see it.
public struct NodeRegistration: Sendable {
    public var name: String
    public var publicKey: String
    public var endpoint: String
    public var listenPort: Int
    public var busKey: String?
    public var busJWTExpires: Date?
    public var tokenHash: [UInt8]
    public var requestID: String
}

/// Nodes and their enrollment (NodeService).
public protocol NodeRepository: Sendable {
    func insertEnrollmentToken(hash: [UInt8], tenant: UUID, createdBy: String, ttl: Duration, uses: Int,
                               audit: AuditEvent) async throws(MeshError) -> Date
    /// The tenant a valid token enrolls into, or nil. A token this very node spent (same WireGuard
    /// key, same bus key, token not expired) still answers: that is the node retrying a registration
    /// whose answer it never got.
    func enrollmentTenant(tokenHash: [UInt8], publicKey: String, busKey: String?) async throws(MeshError) -> UUID?
    /// The node holding a WireGuard public key, anywhere.
    func node(publicKey: String) async throws(MeshError) -> NodeRecord?
    /// The node holding a bus key, and whether the key was revoked.
    func busKeyHolder(_ key: String) async throws(MeshError) -> (holder: UUID?, revoked: Bool)
    /// With the tenant locked: spends one use of the token (or accepts the retry of the node that
    /// spent it, see ``enrollmentTenant(tokenHash:publicKey:busKey:)``), then inserts the node (with its name and
    /// addresses, making it the hub if the tenant has none, dropping the lease hold) or, for a known
    /// node, updates its endpoint, port, name and bus key (revoking an older bus key). Appends the
    /// changes and marks the device configs the change outdates.
    func registerNode(id: UUID, tenant: UUID, _ r: NodeRegistration, addresses: (ipv4: String, ipv6: String)?) async throws(MeshError)
        -> (node: NodeRecord, tenant: TenantRecord, revision: UInt64?, isNew: Bool)
    /// With the tenant locked: deletes the node, revokes its bus key, picks a new hub if it was the
    /// hub, marks outdated configs, records the lease release and the audit entry.
    func deregisterNode(_ id: UUID, tenant: UUID, actor: String, requestID: String) async throws(MeshError) -> (NodeRecord, UInt64)
    /// With the tenant locked: makes a node of the tenant its hub, marks the configs whose hub was the
    /// old one outdated, publishes the settings and audits. No change when it is the hub already.
    func setHub(_ id: UUID, tenant: UUID, actor: String, requestID: String) async throws(MeshError) -> (NodeRecord, TenantRecord, UInt64?)
    /// The tenant's nodes, oldest first, with the tenant.
    func nodes(tenant: UUID) async throws(MeshError) -> (TenantRecord, [NodeRecord])?
}

/// An address release ProvisionSvc owes AllocatorSvc.
public struct LeaseTask: Sendable, Equatable {
    public var owner: UUID
    public var tenant: UUID
    /// True for an allocation whose owner never committed: no node or config ever saw the addresses.
    public var neverPublished: Bool
}

/// The addresses ProvisionSvc asked AllocatorSvc for and must give back (the lease keeper). A hold
/// is written before an allocation; the transaction that commits the owner drops it, and fails if it
/// is gone (the keeper took it because it was due), so an address is never both used and released.
public protocol LeaseTaskRepository: Sendable {
    /// Records that `owner`'s addresses must be released unless its row commits by `due`.
    func holdLease(owner: UUID, tenant: UUID, due: Date) async throws(MeshError)
    /// Claims up to `limit` due tasks (a hold past its due time becomes a release) and makes them due
    /// again after `retryAfter`, so a keeper that dies leaves them to the next.
    func claimLeaseTasks(limit: Int, retryAfter: Duration) async throws(MeshError) -> [LeaseTask]
    /// Forgets a task once AllocatorSvc released the addresses (or the owner's creation failed and
    /// released them itself).
    func finishLeaseTask(owner: UUID) async throws(MeshError)
}

/// The audit log (AuditService).
public protocol AuditRepository: Sendable {
    /// Entries of a tenant with id < `before` that pass `filter`, newest first, at most `limit`.
    func audit(tenant: UUID, before: Int64, limit: Int, filter: AuditFilter) async throws(MeshError) -> [Mesh_V1_AuditEntry]
    /// The license feature counts: the tenant's plan, gate and device count.
    func license(tenant: UUID) async throws(MeshError) -> (TenantRecord, devices: Int)?
}

extension AuditRepository {
    /// Entries of a tenant with id < `before`, newest first, at most `limit`.
    public func audit(tenant: UUID, before: Int64, limit: Int) async throws(MeshError) -> [Mesh_V1_AuditEntry] {
        try await audit(tenant: tenant, before: before, limit: limit, filter: AuditFilter())
    }
}
