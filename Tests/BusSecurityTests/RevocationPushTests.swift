import Foundation
import MeshBus
import MeshBusAuth
import MeshDomain
import MeshStore
import MeshTestSupport
import ProvisionCore
import Testing

/// ProvisionSvc pushes revocations through its system-account connection. nats.c closes a
/// connection for good after an authentication error while it connects (seen now and then right
/// at start-up under load); the push must then connect again rather than fail for ever, or a
/// removed node would keep its bus access.
@Suite(.timeLimit(.minutes(10)), .enabled(if: TestEnvironment.hasInfra, "\(TestEnvironment.skipReason)"))
struct RevocationPushTests {
    @Test func aClosedSystemConnectionIsReplacedAndThePushLands() async throws {
        let sec = try SecureBus(name: "repush")
        let db = try await TestDatabase.create(prefix: "repush")
        let store = Store(StoreConfiguration(url: db.url, poolSize: 2, schema: ProvisionSchema.schema.name), logger: TestEnvironment.logger("test.repush.store"))
        defer {
            store.close()
        }
        try await store.migrate(ProvisionSchema.schema)

        var system = BusConfiguration(servers: [sec.url], name: "repush-system", credentials: try BusCredentials.parseCreds(sec.setup.systemCreds),
                                      retryOnFailedConnect: false)
        system.inboxPrefix = "_INBOX"
        let first = try await BusConnection.connect(system, logger: TestEnvironment.logger("test.repush.system"))
        await first.close()
        #expect(first.isClosed)

        let identities = try NodeBusIdentities(
            issuer: try NodeCredentialIssuer(signingSeed: sec.setup.accountSigningKey.seed, accountJWT: sec.setup.meshAccountJWT),
            signer: try AccountRevocationSigner(operatorSigningSeed: sec.setup.operatorSigningKey.seed, accountJWT: sec.setup.meshAccountJWT),
            systemBus: first, systemConfiguration: system, store: store, logger: TestEnvironment.logger("test.repush"))

        // A node with its own key, connected; its key is then revoked, as deregistration does.
        let nodeKey = NKeyPair.generate(.user)
        let node = UUID(), tenant = UUID()
        let jwt = try NodeCredentialIssuer(signingSeed: sec.setup.accountSigningKey.seed, accountJWT: sec.setup.meshAccountJWT)
            .issue(node: node.lowercased, tenant: tenant.lowercased, userKey: nodeKey.publicKey).jwt
        let nodeBus = try await sec.connect("repush-node", credentials: .jwt(jwt: jwt, seed: nodeKey.seed),
                                            inboxPrefix: BusPolicy.nodeInboxPrefix(node.lowercased))
        #expect(nodeBus.isConnected)
        let events = nodeBus.events()
        // A revocation covers JWTs issued before its time, in whole seconds: wait for the next second.
        let issuedAt = try #require(try NatsJWT.decode(jwt)["iat"]?.intValue, "the node JWT has no iat")
        try await waitUntil("a second after the JWT was issued", interval: .milliseconds(20)) { Int64(Date().timeIntervalSince1970) > issuedAt }
        try await store.query("INSERT INTO bus_revocations (user_key, node_id) VALUES ($1, $2)", nodeKey.publicKey, node)

        // The push finds the connection closed, connects again and lands: the node is cut off.
        #expect(await identities.push(reason: "test"))
        let cut = try await withDeadline(.seconds(60), "the revoked node is disconnected after the push") {
            for await e in events where e == .disconnected || e == .closed { return true }
            return false
        }
        #expect(cut, "the node's event stream ended without a disconnect")
        await nodeBus.close()
        await db.drop()
        await sec.stop()
    }
}
