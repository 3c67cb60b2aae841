import MeshProto

// The stable text forms of the protocol's enums: what the database stores and the HTTP API shows.

extension Mesh_V1_Role {
    /// "owner" or "admin".
    public var key: String {
        switch self {
        case .admin: "admin"
        case .owner: "owner"
        default: "unspecified"
        }
    }

    public init?(key: String) {
        switch key.lowercased() {
        case "owner": self = .owner
        case "admin": self = .admin
        default: return nil
        }
    }
}

extension Mesh_V1_UserStatus {
    /// "active" or "invited".
    public var key: String {
        switch self {
        case .invited: "invited"
        default: "active"
        }
    }

    /// "invited" is invited; anything else active.
    public init(key: String) { self = key == "invited" ? .invited : .active }
}

extension Mesh_V1_DeviceType {
    /// "iphone", "android", "laptop" or "other".
    public var key: String {
        switch self {
        case .iphone: "iphone"
        case .android: "android"
        case .laptop: "laptop"
        case .other: "other"
        default: "unspecified"
        }
    }

    public init?(key: String) {
        switch key.lowercased() {
        case "iphone": self = .iphone
        case "android": self = .android
        case "laptop": self = .laptop
        case "other": self = .other
        default: return nil
        }
    }
}

extension Mesh_V1_PeerKind {
    /// "device" or "node".
    public var key: String {
        switch self {
        case .device: "device"
        case .node: "node"
        default: "unspecified"
        }
    }

    public init?(key: String) {
        switch key {
        case "device": self = .device
        case "node": self = .node
        default: return nil
        }
    }
}

extension Mesh_V1_PeersUpdated {
    /// The member this change adds or changes, if it is an upsert.
    public var upserted: Mesh_V1_Member? { if case .upsert(let m) = change { m } else { nil } }
    /// The member this change removes, if it is a removal.
    public var removed: Mesh_V1_MemberRemoval? { if case .remove(let r) = change { r } else { nil } }
    /// The settings this change sets, if it sets them.
    public var newSettings: Mesh_V1_TenantSettings? { if case .settings(let s) = change { s } else { nil } }
    /// The access policy this change sets, if it sets one.
    public var newPolicy: Mesh_V1_PolicySet? { if case .policy(let p) = change { p } else { nil } }
}

extension Mesh_V1_MemberRemoval {
    /// The removal of a member: what a node needs to drop its peer (the id, its kind and its key).
    public init(id: String, kind: Mesh_V1_PeerKind, publicKey: String) {
        self.init()
        self.id = id
        self.kind = kind
        self.publicKey = publicKey
    }
}
