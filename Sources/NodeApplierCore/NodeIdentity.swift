import Foundation
import MeshBusAuth
import MeshDomain
import MeshKeys
import MeshProto

/// What a node keeps on disk: its WireGuard private key and its bus key (both generated here, never
/// sent anywhere) and what the control plane told it at registration. Every file is mode 0600.
public struct NodeIdentity: Codable, Sendable, Equatable {
    public var nodeID: String
    public var tenantID: String
    public var name: String
    public var dnsName: String
    public var publicKey: String
    public var ipv4: String
    public var ipv6: String
    public var ipv4Prefix: String
    public var ipv6Prefix: String
    /// Not used: the control plane never sends a seed (kept so older state files still decode).
    public var busCredentials: String?
    /// The reply-inbox prefix bound to this node (`_INBOX.node.<id>`).
    public var inboxPrefix: String?
    /// The NATS user JWT the control plane signed for this node's own bus key (`bus.nk`), when the
    /// bus runs with per-node identities. Not secret without the seed.
    public var busUserJWT: String?
    /// When ``busUserJWT`` expires (Unix milliseconds), if it does.
    public var busJWTExpiresAtMs: Int64?

    public init(registration r: Mesh_V1_RegisterNodeResponse) {
        nodeID = r.node.id
        tenantID = r.node.tenantID
        name = r.node.name
        dnsName = r.node.dnsName
        publicKey = r.node.publicKey
        ipv4 = r.node.ipv4
        ipv6 = r.node.ipv6
        ipv4Prefix = r.ipv4Prefix
        ipv6Prefix = r.ipv6Prefix
        busCredentials = r.busCredentials.nilIfEmpty
        inboxPrefix = r.inboxPrefix.nilIfEmpty
        busUserJWT = r.busUserJwt.nilIfEmpty
        busJWTExpiresAtMs = r.busJwtExpiresAtMs == 0 ? nil : r.busJwtExpiresAtMs
    }
}

/// The node's files in its state directory.
public struct NodeStateStore: Sendable {
    public let directory: URL

    public init(directory: String) { self.directory = URL(fileURLWithPath: directory) }

    var keyURL: URL { directory.appendingPathComponent("private.key") }
    var identityURL: URL { directory.appendingPathComponent("node.json") }
    var busKeyURL: URL { directory.appendingPathComponent("bus.nk") }

    /// A new NATS user key for a registration, written to `bus.nk` (0600). Each registration gets a
    /// new one, so a revoked key is never used again.
    public func newBusKey() throws -> NKeyPair {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let key = NKeyPair.generate(.user)
        try writePrivate(busKeyURL, Data((key.seed + "\n").utf8))
        return key
    }

    /// The bus key of the current registration, if any.
    public func busKey() -> NKeyPair? {
        guard let text = try? String(contentsOf: busKeyURL, encoding: .utf8) else { return nil }
        return try? NKeyPair(seed: text, expecting: .user)
    }

    /// The node's keypair: read from `private.key`, or generated and written there (0600) on first start.
    public func keyPair() throws -> WireGuardKeyPair {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        if let text = try? String(contentsOf: keyURL, encoding: .utf8) {
            guard let pair = WireGuardKeyPair(privateKey: text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
                throw MeshError.invalidArgument(field: "private.key", message: "\(keyURL.path) does not hold a WireGuard private key")
            }
            return pair
        }
        let pair = WireGuardKeyPair.generate()
        try writePrivate(keyURL, Data((pair.privateKey + "\n").utf8))
        return pair
    }

    /// The saved registration, if any.
    public func identity() -> NodeIdentity? {
        guard let data = try? Data(contentsOf: identityURL) else { return nil }
        return try? JSONDecoder().decode(NodeIdentity.self, from: data)
    }

    public func save(_ identity: NodeIdentity) throws {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try writePrivate(identityURL, try enc.encode(identity))
    }

    /// Forgets the registration (the node was removed from the mesh); the key stays.
    public func forget() { try? FileManager.default.removeItem(at: identityURL) }

    /// Writes atomically with mode 0600 from the start (never briefly world-readable).
    private func writePrivate(_ url: URL, _ data: Data) throws {
        let tmp = url.appendingPathExtension("tmp")
        let fd = open(tmp.path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0 else { throw CocoaError(.fileWriteNoPermission, userInfo: [NSFilePathErrorKey: tmp.path]) }
        let written = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        fsync(fd)
        close(fd)
        guard written == data.count else { throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: tmp.path]) }
        guard rename(tmp.path, url.path) == 0 else { throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: url.path]) }
    }
}
