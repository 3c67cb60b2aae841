/// The settings a new tenant starts with. Each tenant keeps its own copy in the database (ProvisionSvc
/// owns it and publishes what nodes need as `TenantSettings`), so no service carries these in a flag.
public enum TenantDefaults {
    /// The mesh DNS zone: devices and nodes are `<slug>.quazzar.mesh`.
    public static let domain = "quazzar.mesh"
    /// PersistentKeepalive between nodes, and from a device to its nodes (seconds).
    public static let nodeKeepalive = 25
    public static let deviceKeepalive = 25
    /// The MTU written into device configs. 1280 (the IPv6 minimum) plus WireGuard's 80 bytes over
    /// IPv6 fits every link a phone meets, cellular tunnels included (docs/routing.md).
    public static let deviceMTU = 1280
    /// How many nodes a device config lists (the hub first). The others are reached through the hub.
    /// Eight keeps the config inside a QR code at error-correction level M.
    public static let configMaxNodes = 8
    /// How many of the listed nodes a config names as DNS resolvers.
    public static let dnsResolvers = 2
}
