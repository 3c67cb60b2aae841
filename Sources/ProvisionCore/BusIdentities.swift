import Foundation
import Logging
import MeshBus
import MeshBusAuth
import MeshDomain
import ServiceKit
import MeshStore
import ServiceLifecycle
import Synchronization

/// Per-node bus identities: ProvisionSvc signs each registering node a NATS user JWT for the key the
/// node made itself, and revokes that key when the node is removed, by pushing the mesh account's
/// JWT with the new revocation list to nats-server through the system account. docs/security.md
/// explains the design.
///
/// Run it as a service too: it pushes the current list at start-up and every `resyncInterval`, so a
/// server that lost an update (restarted from its preload, or missed a push) converges.
public final class NodeBusIdentities: Service, Sendable {
    let issuer: NodeCredentialIssuer
    let signer: AccountRevocationSigner
    /// The system-account connection that pushes account updates. nats.c closes a connection for
    /// good after an authentication error while connecting; a closed one is replaced
    /// (``currentSystemBus()``), so revocations are never stuck behind a dead connection.
    private let systemBus: Mutex<BusConnection>
    /// How to connect the system-account connection again; nil when it was handed in ready-made.
    private let systemConfiguration: BusConfiguration?
    let store: Store
    let logger: Logger
    let resyncInterval: Duration
    /// Pushes within this process run one at a time.
    private let gate = PushGate()
    private let lastPushed = Mutex<[String: Int64]?>(nil)
    /// One signal per push: check again in the next second.
    private let recheck = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))

    public init(issuer: NodeCredentialIssuer, signer: AccountRevocationSigner, systemBus: BusConnection,
                systemConfiguration: BusConfiguration? = nil, store: Store,
                resyncInterval: Duration = .seconds(60), logger: Logger) throws {
        guard issuer.account == signer.account else {
            throw NKeyError.invalidJWT("the node issuer and the revocation signer name different accounts")
        }
        self.issuer = issuer
        self.signer = signer
        self.systemBus = Mutex(systemBus)
        self.systemConfiguration = systemConfiguration
        self.store = store
        self.resyncInterval = resyncInterval
        self.logger = logger
    }

    /// Issues a node's JWT.
    func issue(node: UUID, tenant: UUID, userKey: String) throws(MeshError) -> (jwt: String, expires: Date?) {
        do {
            return try issuer.issue(node: node.lowercased, tenant: tenant.lowercased, userKey: userKey)
        } catch {
            logger.error("cannot sign a node JWT", metadata: ["node.id": "\(node.lowercased)", "error": "\(error)"])
            throw .internal("cannot issue bus credentials")
        }
    }

    /// Pushes the account JWT with every current revocation and returns whether a server accepted it.
    ///
    /// JWTs carry whole seconds and a server keeps the newest (an equal time replaces), so two
    /// replicas pushing in the same second could leave the older list in place. After each push the
    /// service reads the list again in the next second and pushes once more if it changed.
    @discardableResult
    public func push(reason: String) async -> Bool {
        let ok = await gate.run { () async -> Bool in
            guard let current = await self.currentRevocations() else { return false }
            guard await self.send(current, reason: reason) else { return false }
            self.lastPushed.withLock { $0 = current }
            return true
        }
        recheck.continuation.yield()
        return ok
    }

    /// Pushes again if the list differs from the last one pushed.
    func pushIfChanged() async {
        await gate.run { () async -> Void in
            guard let current = await self.currentRevocations(), current != self.lastPushed.withLock({ $0 }) else { return }
            if await self.send(current, reason: "changed meanwhile") { self.lastPushed.withLock { $0 = current } }
        }
    }

    private func currentRevocations() async -> [String: Int64]? {
        do {
            return try await store.write { tx in
                // Nothing issued for these keys can still be valid (with five minutes for clock skew).
                try tx.execute("DELETE FROM bus_revocations WHERE prune_after < now() - interval '5 minutes'")
                var out: [String: Int64] = [:]
                for row in try tx.query("SELECT user_key, extract(epoch FROM revoked_at)::bigint AS at FROM bus_revocations") {
                    let key: String = try row.decode("user_key"), at: Int64 = try row.decode("at")
                    out[key] = at
                }
                return out
            }
        } catch {
            logger.warning("cannot read bus revocations", metadata: ["error": "\(error)"])
            return nil
        }
    }

    private func send(_ revocations: [String: Int64], reason: String) async -> Bool {
        do {
            let jwt = try signer.sign(revocations: revocations)
            let reply = try await currentSystemBus().request(signer.claimsUpdateSubject, Array(jwt.utf8), timeout: .seconds(3))
            let answer = try? JSONDecoder().decode(JSONValue.self, from: Data(reply.payload))
            if let code = answer?["data"]?["code"]?.intValue, code == 200 {
                logger.info("bus revocations pushed", metadata: ["revocations": "\(revocations.count)", "reason": "\(reason)"])
                return true
            }
            let why = answer?["error"]?["description"]?.stringValue ?? String(decoding: reply.payload, as: UTF8.self)
            logger.error("nats-server refused the account update", metadata: ["error": "\(why)", "reason": "\(reason)"])
            return false
        } catch {
            logger.error("cannot push bus revocations; retrying later", metadata: ["error": "\(error)", "reason": "\(reason)"])
            return false
        }
    }

    /// The system-account connection, connected again first if nats.c has closed it.
    private func currentSystemBus() async throws -> BusConnection {
        let bus = systemBus.withLock { $0 }
        guard bus.isClosed, let systemConfiguration else { return bus }
        logger.warning("the system-account bus connection was closed; connecting again")
        let fresh = try await BusConnection.connect(systemConfiguration, logger: logger)
        systemBus.withLock { $0 = fresh }
        return fresh
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask {
                    _ = await self.push(reason: "start")
                    while !Task.isCancelled {
                        try? await Task.sleep(for: self.resyncInterval)
                        if Task.isCancelled { break }
                        _ = await self.push(reason: "periodic")
                    }
                }
                group.addTask {
                    for await _ in self.recheck.stream {
                        let ms = 1000 - Int(Date().timeIntervalSince1970 * 1000) % 1000
                        try? await Task.sleep(for: .milliseconds(ms + 5))
                        if Task.isCancelled { break }
                        await self.pushIfChanged()
                    }
                }
            }
        }
        recheck.continuation.finish()
        await systemBus.withLock { $0 }.drain(timeout: .seconds(2))
    }
}

/// Runs async bodies one at a time.
actor PushGate {
    private var busy = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    func run<T: Sendable>(_ body: @Sendable () async -> T) async -> T {
        while busy {
            await withCheckedContinuation { waiters.append($0) }
        }
        busy = true
        defer {
            busy = false
            if !waiters.isEmpty { waiters.removeFirst().resume() }
        }
        return await body()
    }
}

/// ProvisionSvc's bus-identity settings: four secrets from the environment (`NAME` or the file named
/// by `NAME_FILE`, never the command line) and two tuning options. All four keys or none: without
/// them the bus runs without per-node identities.
public struct BusIdentityConfiguration: Sendable {
    /// The mesh account's JWT (`MESH_BUS_ACCOUNT_JWT[_FILE]`).
    public var accountJWT: String
    /// The account signing key's seed (`MESH_BUS_ACCOUNT_SIGNING_KEY[_FILE]`); signs node JWTs.
    public var accountSigningSeed: String
    /// The operator signing key's seed (`MESH_BUS_OPERATOR_SIGNING_KEY[_FILE]`); signs account updates.
    public var operatorSigningSeed: String
    /// A system-account user's `.creds` (`MESH_BUS_SYSTEM_CREDS[_FILE]`); pushes account updates.
    public var systemCreds: String
    /// Lifetime of node JWTs (ProvisionSvc's `--bus-node-jwt-ttl`; nil: no expiry).
    public var nodeJWTLifetime: Duration?
    /// How often the revocation list is pushed again (ProvisionSvc's `--bus-revocation-resync`).
    public var resyncInterval: Duration

    public init(accountJWT: String, accountSigningSeed: String, operatorSigningSeed: String, systemCreds: String,
                nodeJWTLifetime: Duration? = nil, resyncInterval: Duration = .seconds(60)) {
        self.accountJWT = accountJWT
        self.accountSigningSeed = accountSigningSeed
        self.operatorSigningSeed = operatorSigningSeed
        self.systemCreds = systemCreds
        self.nodeJWTLifetime = nodeJWTLifetime
        self.resyncInterval = resyncInterval
    }

    /// The four secrets, in the order ``fromEnvironment(nodeJWTLifetime:resyncInterval:)`` reads them.
    public static let secrets = [
        SecretSetting("MESH_BUS_ACCOUNT_JWT", "The mesh account's JWT (accounts/mesh.jwt of `meshctl bus init`); with the next three, turns per-node bus identities on."),
        SecretSetting("MESH_BUS_ACCOUNT_SIGNING_KEY", "The mesh account's signing key seed (keys/mesh-signing.nk), which signs node JWTs."),
        SecretSetting("MESH_BUS_OPERATOR_SIGNING_KEY", "The operator's signing key seed (keys/operator-signing.nk), which signs account updates (revocations)."),
        SecretSetting("MESH_BUS_SYSTEM_CREDS", "A system-account user's .creds (creds/system.creds), which pushes account updates to nats-server."),
    ]

    /// The settings from the environment; nil when none of the secrets is set; an error when only some are.
    public static func fromEnvironment(nodeJWTLifetime: Duration?, resyncInterval: Duration) throws -> BusIdentityConfiguration? {
        let names = secrets.map(\.name)
        let values = try names.map { try Env.secret($0) }
        if values.allSatisfy({ $0 == nil }) { return nil }
        if let missing = zip(names, values).first(where: { $0.1 == nil })?.0 {
            throw MeshError.invalidArgument(field: missing, message: "per-node bus identities need all of \(names.map { $0 + "[_FILE]" }.joined(separator: ", ")); \(missing) is missing")
        }
        return BusIdentityConfiguration(accountJWT: values[0]!, accountSigningSeed: values[1]!, operatorSigningSeed: values[2]!,
                                        systemCreds: values[3]!, nodeJWTLifetime: nodeJWTLifetime, resyncInterval: resyncInterval)
    }
}

extension NodeBusIdentities {
    /// Checks the keys, connects the system-account connection (same servers and TLS as `base`) and
    /// builds the service.
    public static func start(_ c: BusIdentityConfiguration, base: BusConfiguration, store: Store, logger: Logger) async throws -> NodeBusIdentities {
        let issuer = try NodeCredentialIssuer(signingSeed: c.accountSigningSeed, accountJWT: c.accountJWT, lifetime: c.nodeJWTLifetime)
        let signer = try AccountRevocationSigner(operatorSigningSeed: c.operatorSigningSeed, accountJWT: c.accountJWT)
        var sys = base
        sys.name = base.name + "-system"
        sys.inboxPrefix = "_INBOX"
        sys.credentials = try BusCredentials.parseCreds(c.systemCreds)
        let bus = try await BusConnection.connect(sys, logger: logger)
        logger.info("per-node bus identities on", metadata: ["nats.account": "\(issuer.account)"])
        return try NodeBusIdentities(issuer: issuer, signer: signer, systemBus: bus, systemConfiguration: sys, store: store,
                                     resyncInterval: c.resyncInterval, logger: logger)
    }
}
