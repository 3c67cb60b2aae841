import Foundation
import Logging
import MeshBusAuth
import MeshClient
import MeshDomain
import MeshProto
import MeshWireGuard
import NodeApplierCore
import Testing

/// nkeys, NATS JWTs, the permission policy and the node's checks of what it receives: no servers needed.
@Suite(.timeLimit(.minutes(10))) struct BusAuthUnitTests {
    @Test func nkeysRoundTripAndRejectDamage() throws {
        for kind in NKeyKind.allCases {
            let k = NKeyPair.generate(kind)
            #expect(k.publicKey.first == kind.letter)
            #expect(k.publicKey.count == 56)
            #expect(k.seed.hasPrefix("S\(kind.letter)"))
            #expect(k.seed.count == 58)
            let again = try NKeyPair(seed: k.seed, expecting: kind)
            #expect(again.publicKey == k.publicKey)
            #expect(NKeyCodec.kind(ofPublicKey: k.publicKey) == kind)
            // One changed character breaks the checksum.
            var chars = Array(k.publicKey)
            chars[10] = chars[10] == "A" ? "B" : "A"
            #expect(!NKeyCodec.isValidPublicKey(String(chars), kind: kind))
        }
        let user = NKeyPair.generate(.user)
        #expect(throws: NKeyError.wrongKind(expected: .account)) { try NKeyPair(seed: user.seed, expecting: .account) }
        #expect(!NKeyCodec.isValidPublicKey(user.publicKey, kind: .account))
        #expect(!user.description.contains(user.seed))
        let sig = user.sign(Array("nonce".utf8))
        #expect(NKeyCodec.verify(signature: sig, of: Array("nonce".utf8), publicKey: user.publicKey))
        #expect(!NKeyCodec.verify(signature: sig, of: Array("other".utf8), publicKey: user.publicKey))
    }

    @Test func base32MatchesRFC4648() {
        // RFC 4648 test vectors, without padding.
        let vectors = ["": "", "f": "MY", "fo": "MZXQ", "foo": "MZXW6", "foob": "MZXW6YQ", "fooba": "MZXW6YTB", "foobar": "MZXW6YTBOI"]
        for (plain, encoded) in vectors {
            #expect(Base32.encode(Array(plain.utf8)) == encoded)
            #expect(Base32.decode(encoded) == Array(plain.utf8))
        }
        #expect(Base32.decode("MZ1W") == nil)
    }

    @Test func jwtsAreSignedVerifiedAndCarryPermissions() throws {
        let account = NKeyPair.generate(.account), signing = NKeyPair.generate(.account)
        let accountJWT = try NatsJWT.sign(NatsClaims.account(subject: account.publicKey, name: "mesh", signingKeys: [signing.publicKey]),
                                          issuer: NKeyPair.generate(.operator))
        let issuer = try NodeCredentialIssuer(signingSeed: signing.seed, accountJWT: accountJWT, lifetime: .seconds(3600))
        let node = NKeyPair.generate(.user)
        let (jwt, expires) = try issuer.issue(node: "n1", tenant: "t1", userKey: node.publicKey, now: Date(timeIntervalSince1970: 1_000_000))
        #expect(expires == Date(timeIntervalSince1970: 1_003_600))
        let claims = try NatsJWT.decode(jwt)
        #expect(claims["sub"]?.stringValue == node.publicKey)
        #expect(claims["iss"]?.stringValue == signing.publicKey)
        #expect(claims["name"]?.stringValue == "node:n1")
        #expect(claims["exp"]?.intValue == 1_003_600)
        #expect(claims["nats"]?["issuer_account"]?.stringValue == account.publicKey)
        #expect(claims["nats"]?["type"]?.stringValue == "user")
        #expect(claims["nats"]?["pub"]?["allow"] == .strings(["mesh.v1.reports.t1.n1.handshake", "mesh.v1.provision.node.certificate.t1.n1", "mesh.v1.fanout.sync.t1.n1",
                                                               "mesh.v1.fanout.changes.t1.n1", "mesh.v1.fanout.revision.t1"]))
        #expect(claims["nats"]?["resp"]?["max"]?.intValue == 1)
        // A signature over other claims does not verify.
        let parts = jwt.split(separator: ".")
        let otherClaims = try NatsJWT.sign(NatsClaims.user(subject: node.publicKey, name: "node:n2", permissions: BusPermissions()),
                                           issuer: signing).split(separator: ".")
        #expect(throws: NKeyError.invalidSignature) { try NatsJWT.decode("\(parts[0]).\(otherClaims[1]).\(parts[2])") }
        // A key the account JWT does not list is refused, and so is a non-user subject.
        #expect(throws: (any Error).self) { try NodeCredentialIssuer(signingSeed: NKeyPair.generate(.account).seed, accountJWT: accountJWT) }
        #expect(throws: (any Error).self) { try issuer.issue(node: "n1", tenant: "t1", userKey: account.publicKey) }
    }

    @Test func revocationSignerKeepsTheAccountAndReplacesTheList() throws {
        let op = NKeyPair.generate(.operator), opSigning = NKeyPair.generate(.operator), account = NKeyPair.generate(.account)
        let accountJWT = try NatsJWT.sign(NatsClaims.account(subject: account.publicKey, name: "mesh", signingKeys: ["AXYZ"]), issuer: op)
        let signer = try AccountRevocationSigner(operatorSigningSeed: opSigning.seed, accountJWT: accountJWT)
        #expect(signer.claimsUpdateSubject == "$SYS.REQ.ACCOUNT.\(account.publicKey).CLAIMS.UPDATE")
        let revoked = NKeyPair.generate(.user).publicKey
        let claims = try NatsJWT.decode(try signer.sign(revocations: [revoked: 1_700_000_000], issuedAt: 1_800_000_000))
        #expect(claims["iss"]?.stringValue == opSigning.publicKey)
        #expect(claims["iat"]?.intValue == 1_800_000_000)
        #expect(claims["sub"]?.stringValue == account.publicKey)
        #expect(claims["nats"]?["signing_keys"] == .strings(["AXYZ"]))
        #expect(claims["nats"]?["revocations"]?[revoked]?.intValue == 1_700_000_000)
        #expect(try NatsJWT.decode(try signer.sign(revocations: [:]))["nats"]?["revocations"] == nil)
    }

    @Test func nodePermissionsAreBoundToTheNodeAndItsTenant() {
        let p = BusPolicy.node(tenant: "t1", node: "n1")
        #expect(p.publishAllow == ["mesh.v1.reports.t1.n1.handshake", "mesh.v1.provision.node.certificate.t1.n1", "mesh.v1.fanout.sync.t1.n1", "mesh.v1.fanout.changes.t1.n1",
                                   "mesh.v1.fanout.revision.t1"])
        #expect(p.subscribeAllow == ["mesh.v1.peers.updated.t1", "mesh.v1.node.n1.>", "_INBOX.node.n1.>", "$SRV.PING", "$SRV.INFO", "$SRV.STATS",
                                     "$SRV.*.NodeApplier", "$SRV.*.NodeApplier.n1"])
        #expect(p.responses == 1)
        #expect(BusPolicy.enroll.publishAllow == [MeshSubjects.nodeRegister])
        #expect(BusPolicy.enroll.subscribeAllow == ["_INBOX.enroll.>"])
        // Only FanoutSvc may publish peer updates; the operator tool is explicitly denied them.
        for s in BusPolicy.Service.allCases {
            let mayPublishUpdates = s.permissions.publishAllow.contains { $0.hasPrefix("mesh.v1.peers.updated") }
            #expect(mayPublishUpdates == (s == .fanout))
        }
        #expect(BusPolicy.Service.admin.permissions.publishDeny == ["mesh.v1.peers.updated.>", "mesh.v1.fanout.ingest", "mesh.v1.status.*.devices"])
        // Only ProvisionSvc publishes device status (what the pages' live channels show).
        for s in BusPolicy.Service.allCases {
            let mayPublishStatus = s.permissions.publishAllow.contains { $0 == MeshSubjects.deviceStatusWildcard || $0 == "mesh.v1.>" }
                && !s.permissions.publishDeny.contains(MeshSubjects.deviceStatusWildcard)
            #expect(mayPublishStatus == (s == .provision), "\(s)")
        }
        #expect(BusPolicy.Service.gateway.permissions.subscribeAllow.contains(MeshSubjects.deviceStatusWildcard))
        #expect(!BusPolicy.node(tenant: "t1", node: "n1").publishAllow.contains { $0.hasPrefix("mesh.v1.status") })
        // Only ProvisionSvc feeds FanoutSvc.
        for s in BusPolicy.Service.allCases {
            let mayIngest = s.permissions.publishAllow.contains { $0 == MeshSubjects.fanoutIngest || $0 == "mesh.v1.fanout.>" || $0 == "mesh.v1.>" }
                && !s.permissions.publishDeny.contains(MeshSubjects.fanoutIngest)
            #expect(mayIngest == (s == .provision), "\(s)")
        }
    }

    @Test func busInitWritesPrivateFilesAndAServerConfiguration() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bus-init-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let setup = try BusSetup.generate()
        try setup.write(to: dir.path)
        let conf = try String(contentsOf: dir.appendingPathComponent("nats.conf"), encoding: .utf8)
        #expect(conf.contains("system_account: \(setup.systemAccount.publicKey)"))
        #expect(conf.contains("type: full"))
        #expect(conf.contains(setup.meshAccount.publicKey + ": \"" + setup.meshAccountJWT + "\""))
        #expect(!conf.contains(setup.accountSigningKey.seed))
        for secret in ["keys/mesh-signing.nk", "keys/operator-signing.nk", "keys/operator.nk", "creds/provision.creds", "creds/enroll.creds",
                       "creds/system.creds"] {
            let attrs = try FileManager.default.attributesOfItem(atPath: dir.appendingPathComponent(secret).path)
            #expect((attrs[.posixPermissions] as? Int) == 0o600, "\(secret)")
        }
        // Never overwrites keys.
        #expect(throws: (any Error).self) { try BusSetup.generate().write(to: dir.path) }
    }

    @Test func nodeAcceptsOnlyItsTenantsSubjectAndItsOwnPeerList() async throws {
        var reg = Mesh_V1_RegisterNodeResponse()
        reg.node.id = "self"
        reg.node.tenantID = "t1"
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        // A view without this node: another tenant's, or a forged one.
        let list = MeshView(revision: 3, settings: Mesh_V1_TenantSettings(), members: [])
        let agent = NodeAgent(identity: NodeIdentity(registration: reg), interface: "wg0", backend: InMemoryWireGuard(devices: ["wg0"]),
                              logger: logger) { () async throws(MeshError) in list }
        var u = Mesh_V1_PeersUpdated()
        u.tenantID = "t1"
        u.revision = 1
        let bytes = try u.serializedBytes() as [UInt8]
        #expect(agent.receive(subject: "mesh.v1.peers.updated.t1", payload: bytes) != nil)
        #expect(agent.receive(subject: "mesh.v1.peers.updated.t2", payload: bytes) == nil)
        #expect(agent.receive(subject: "mesh.v1.peers.updated.t1.x", payload: bytes) == nil)
        #expect(agent.receive(subject: "mesh.v1.peers.updated.t1", payload: [0xff, 0xff]) == nil)
        var other = u
        other.tenantID = "t2"
        #expect(agent.receive(subject: "mesh.v1.peers.updated.t1", payload: try other.serializedBytes()) == nil)
        // A view that does not hold this node is refused, and the agent stays unsynced.
        let task = Task { await agent.run() }
        defer { task.cancel() }
        await #expect(throws: (any Error).self) { try await agent.refresh(reason: "test") }
        #expect(!agent.status().synced)
    }
}
