import Foundation
import MeshBus
import MeshBusAuth
import MeshClient
import MeshKeys
import MeshDomain
import MeshProto
import MeshStore

/// A private control plane for one test: its own nats-server and database, and the real service
/// executables: one AllocatorSvc and `replicas` ProvisionSvc processes, plus FanoutSvc replicas when
/// asked for.
public final class ControlPlane: Sendable {
    public let nats: TestNatsServer
    public let db: TestDatabase
    public let bus: BusConnection
    public let store: Store
    public let processes: [ManagedProcess]
    public let client: ProvisionClient
    public let logDir: URL
    /// The secured bus, when the control plane runs on one (every service with its own credentials;
    /// ``bus`` is then the operator's `meshctl` identity).
    public let security: SecureBus?

    /// Starts the services: one AllocatorSvc, `replicas` ProvisionSvc and `fanout` FanoutSvc replicas
    /// (0 = none: ProvisionSvc's outbox relay then waits for one, as it would in production). With `secureBus`
    /// the bus runs the `meshctl bus init` configuration (`secureTLS`: and requires TLS). The database
    /// is made on the shared test server, or on the one `databaseAdminURL` names.
    public static func start(_ name: String, replicas: Int = 1, fanout: Int = 1, environment: [String: String] = [:],
                             natsHost: String = "127.0.0.1", secureBus: Bool = false, secureTLS: Bool = false,
                             databaseAdminURL: String? = nil) async throws -> ControlPlane {
        let security = secureBus ? try SecureBus(name: name, host: natsHost, tls: secureTLS) : nil
        let nats = try security?.nats ?? TestNatsServer(name: name, host: natsHost)
        let db = try await TestDatabase.create(prefix: "prov", adminURL: databaseAdminURL)
        let bus: BusConnection
        if let security {
            bus = try await security.connect(as: .admin, name: "t-\(name)")
        } else {
            bus = try await TestEnvironment.connectBus("t-\(name)", url: nats.url)
        }
        let logDir = TestEnvironment.outputDir("provision-\(name)")
        func env(_ s: BusPolicy.Service) -> [String: String] { environment.merging(security?.environment(for: s) ?? [:]) { _, new in new } }
        let alloc = try await ServiceProcesses.start("AllocatorSvc", natsURL: nats.url, databaseURL: db.url, environment: env(.allocator),
                                                     bus: bus, logDir: logDir)
        let prov = try await ServiceProcesses.start("ProvisionSvc", count: replicas, natsURL: nats.url, databaseURL: db.url,
                                                    environment: env(.provision), bus: bus, logDir: logDir)
        let fan = fanout == 0 ? [] : try await ServiceProcesses.start("FanoutSvc", count: fanout, natsURL: nats.url, databaseURL: db.url,
                                                                      environment: env(.fanout), bus: bus, logDir: logDir)
        let store = Store(StoreConfiguration(url: db.url, poolSize: 2, schema: TestDatabase.allSchemas), logger: TestEnvironment.logger("t"))
        return ControlPlane(nats: nats, db: db, bus: bus, store: store, processes: alloc + prov + fan,
                            client: ProvisionClient(bus: bus, timeout: .seconds(30)), logDir: logDir, security: security)
    }

    private init(nats: TestNatsServer, db: TestDatabase, bus: BusConnection, store: Store, processes: [ManagedProcess],
                 client: ProvisionClient, logDir: URL, security: SecureBus?) {
        self.security = security
        self.nats = nats
        self.db = db
        self.bus = bus
        self.store = store
        self.processes = processes
        self.client = client
        self.logDir = logDir
    }

    /// Stops every process and removes the database and the nats-server. Throws when a service
    /// exited while the test ran (unless the test stopped it) or did not exit 0 on SIGTERM: a crash
    /// during a test fails that test, even if the other replicas covered for it.
    public func stop() async throws {
        let failure: (any Error)?
        do {
            try await stopChecked(processes)
            failure = nil
        } catch {
            failure = error
        }
        await bus.close()
        store.close()
        await db.drop()
        await nats.stop()
        if let security { await security.stop() }
        if let failure { throw failure }
    }

    /// Throws ``ProcessFailure`` if any service has exited although the test did not stop it.
    public func checkAlive() throws {
        for p in processes { try p.checkAlive() }
    }

    /// Creates a tenant on `plan`.
    public func tenant(_ plan: Mesh_V1_Plan, requireSaml: Bool = false) async throws -> Mesh_V1_Tenant {
        var r = Mesh_V1_CreateTenantRequest()
        r.name = "tenant \(Nuid.short())"
        r.plan = plan
        r.requireSaml = requireSaml
        return try await client.createTenant(r)
    }

    /// Creates a tenant on `plan` that can take devices: with an admin ("operator") and one node
    /// ("edge", the hub), since a device config needs a node to connect to.
    public func readyTenant(_ plan: Mesh_V1_Plan, requireSaml: Bool = false) async throws -> Mesh_V1_Tenant {
        let t = try await tenant(plan, requireSaml: requireSaml)
        let admin = try await user(t, .admin)
        _ = try await node(t, admin: admin, name: "edge", endpoint: "192.0.2.250:51820")
        return t
    }

    /// Creates a user and returns a caller identity for it.
    public func user(_ tenant: Mesh_V1_Tenant, _ role: Mesh_V1_Role = .owner) async throws -> Mesh_V1_Caller {
        var r = Mesh_V1_CreateUserRequest()
        r.tenantID = tenant.id
        r.name = "user \(Nuid.short())"
        r.role = role
        let u = try await client.createUser(r)
        var c = Mesh_V1_Caller()
        c.tenantID = tenant.id
        c.userID = u.id
        c.role = role
        return c
    }

    /// Registers a node with a fresh keypair; returns the node and its private key.
    public func node(_ tenant: Mesh_V1_Tenant, admin: Mesh_V1_Caller, name: String, endpoint: String) async throws -> (Mesh_V1_Node, WireGuardKeyPair) {
        let token = try await client.createEnrollmentToken(caller: admin)
        let keys = WireGuardKeyPair.generate()
        var r = Mesh_V1_RegisterNodeRequest()
        r.enrollmentToken = token.token
        r.name = name
        r.publicKey = keys.publicKey
        r.endpoint = endpoint
        r.listenPort = UInt32(endpoint.split(separator: ":").last.flatMap { UInt32($0) } ?? 51820)
        return (try await client.registerNode(r).node, keys)
    }

    /// Every service log written so far.
    public func logs() -> String { processes.map { $0.log() }.joined(separator: "\n") }
}

/// The ``MeshError`` a throwing call produced, or nil when it succeeded.
public func meshError(_ body: () async throws -> Void) async -> MeshError? {
    do {
        try await body()
        return nil
    } catch let e as MeshError {
        return e
    } catch {
        return .internal("\(error)")
    }
}
