import Foundation
import MeshCore
import MeshProto

/// What a node keeps on disk: its private key (generated here, never sent anywhere) and what the
/// control plane told it at registration. Both files are mode 0600.
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
    /// Bus credentials bound to this node, when the bus runs with per-node identities.
    public var busCredentials: String?
    public var inboxPrefix: String?

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
    }
}

/// The node's files in its state directory.
public struct NodeStateStore: Sendable {
    public let directory: URL

    public init(directory: String) { self.directory = URL(fileURLWithPath: directory) }

    var keyURL: URL { directory.appendingPathComponent("private.key") }
    var identityURL: URL { directory.appendingPathComponent("node.json") }

    /// The node's keypair: read from `private.key`, or generated and written there (0600) on first start.
    public func keyPair() throws -> WireGuardKeyPair {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        if let text = try? String(contentsOf: keyURL, encoding: .utf8) {
            return try WireGuardKeyPair(privateKey: text.trimmingCharacters(in: .whitespacesAndNewlines))
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
