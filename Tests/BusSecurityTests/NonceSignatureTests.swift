import Foundation
import MeshBus
import MeshBusAuth
import MeshTestSupport
import Testing

/// nats-server refused about one valid JWT connection in 256 from libnats 3.4: nats.c drops a nonce
/// signature whose first byte is 0 from CONNECT ("Signature missing"; docs/security.md, "Refused
/// connections"). MeshBus holds such a signature back and connects again, and retries nothing else.
@Suite(.timeLimit(.minutes(10)), .enabled(if: TestEnvironment.hasInfra, "\(TestEnvironment.skipReason)"), .serialized)
struct NonceSignatureTests {
    /// Many connections with valid credentials, from a `.creds` file and from memory: the server
    /// refuses none. Without the hold-back, about 1 in 256 would be refused, so among 1,500 at least
    /// one would be with probability 99.7%.
    @Test func validCredentialsAreNeverRefused() async throws {
        let sec = try SecureBus(name: "nonce")
        let count = 1_500
        let heldBefore = BusConnection.nonceSignaturesHeldBack
        let fromMemory = try BusCredentials.parseCreds(sec.setup.serviceCreds[.fanout]!)
        var refused: [String] = []
        let start = ContinuousClock.now
        for i in 0..<count {
            let credentials: BusCredentials = i % 2 == 0 ? .credsFile(path: sec.path("creds/fanout.creds")) : fromMemory
            let bus = try await sec.connect("nonce-\(i)", credentials: credentials)
            do {
                try await bus.waitUntilConnected(timeout: .seconds(20))
            } catch {
                refused.append("connection \(i): \(error)")
            }
            await bus.close()
        }
        let took = ContinuousClock.now - start
        let held = BusConnection.nonceSignaturesHeldBack - heldBefore
        let serverRefusals = sec.nats.log().components(separatedBy: "authentication error").count - 1
        print("nonce signatures: \(count) connections in \(took), \(held) signatures held back (libnats drops a leading zero: "
              + "\(BusConnection.libnatsDropsLeadingZeroSignatures)), \(serverRefusals) refused by the server")
        #expect(refused.isEmpty, "\(refused.count) of \(count) connections failed: \(refused.prefix(5))")
        #expect(serverRefusals == 0, "the server refused \(serverRefusals) connections with valid credentials")
        await sec.stop()
    }

    /// Credentials the server does not accept are refused once: no connection is made again.
    @Test func aGenuineRefusalIsNotRetried() async throws {
        let sec = try SecureBus(name: "nonce-bad")
        // A user signed by an account the operator does not know.
        let stranger = NKeyPair.generate(.account), user = NKeyPair.generate(.user)
        let jwt = try NatsJWT.sign(NatsClaims.user(subject: user.publicKey, name: "stranger", permissions: BusPermissions()), issuer: stranger)
        // nats.c gives the refused connection up: connect returns it closed, or, when nats.c closed
        // it before its connect call returned, throws.
        do {
            let bus = try await sec.connect("stranger", credentials: .jwt(jwt: jwt, seed: user.seed))
            try await waitUntil("nats.c gives the refused connection up", timeout: .seconds(20)) { bus.isClosed }
            #expect(!bus.isClosing, "the connection was closed by the test, not by nats.c")
        } catch let error as BusError {
            #expect(error == .closed || "\(error)".contains("Authorization"), "connect failed otherwise: \(error)")
        }
        // Give a retry, had there been one, time to reach the server.
        try await Task.sleep(for: .seconds(1))
        let serverRefusals = sec.nats.log().components(separatedBy: "authentication error").count - 1
        #expect(serverRefusals == 1, "the server saw \(serverRefusals) attempts with the refused credentials")
        await #expect(throws: BusError.self) {
            _ = try await sec.connect("stranger-2", credentials: .jwt(jwt: jwt, seed: user.seed), retryOnFailedConnect: false)
        }
        await sec.stop()
    }
}
