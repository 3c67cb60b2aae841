import ArgumentParser
import Foundation
import Logging
import MeshBus
import MeshClient
import MeshAuth
import MeshDomain
import ServiceKit
import MeshProto

/// meshctl: administration of a Quazzar Mesh control plane over the bus, and token minting with
/// the Gateway's signing key.
@main
struct MeshCtl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "meshctl",
        abstract: "Administer Quazzar Mesh: tenants, users, tokens, devices, nodes, access policies, audit log.",
        discussion: """
            Talks to the services over NATS (the --nats-* options of each command; each also reads the environment variable \
            named in its help). --json prints one JSON document on stdout for scripts.

            \(Env.secretsHelp(BusOptions.secrets + MeshCtl.tokenKeys))
            """,
        subcommands: [Tenant.self, User.self, Token.self, Device.self, Node.self, Policy.self, Mesh.self, Settings.self, Audit.self, Bus.self, ServiceCommand.self, Fallback.self])

    /// The keys `meshctl token` signs with (the Gateway's).
    static let tokenKeys = [
        SecretSetting("MESH_JWT_SECRET", "The HS256 key (at least 32 bytes) that `meshctl token` signs with."),
        SecretSetting("MESH_JWT_EDDSA_PRIVATE_KEY", "The Ed25519 private key (PEM, or base64 of its 32-byte seed) that `meshctl token` signs with when MESH_JWT_SECRET is not set."),
    ]
}

/// Options every subcommand shares.
struct CtlOptions: ParsableArguments {
    @OptionGroup var bus: BusOptions

    @Flag(name: .customLong("json"), help: "Print JSON (for scripts).")
    var json = false

    @Option(name: .customLong("timeout"), help: "Seconds to wait for a service.")
    var timeout: Double = 10

    /// A bus connection for one command.
    func connect(inboxPrefix: String = "_INBOX") async throws -> BusConnection {
        var logger = Logger(label: "meshctl")
        logger.logLevel = .error
        var config = try bus.busConfiguration(name: "meshctl", inboxPrefix: inboxPrefix)
        config.retryOnFailedConnect = false
        return try await BusConnection.connect(config, logger: logger)
    }

    /// Runs `body` with a ProvisionClient and closes the connection afterwards; service errors
    /// become a one-line message and exit code 1.
    func withProvision<T>(_ body: (ProvisionClient) async throws -> T) async throws -> T {
        let bus = try await connect()
        do {
            let r = try await body(ProvisionClient(bus: bus, timeout: .milliseconds(Int(timeout * 1000))))
            await bus.close()
            return r
        } catch let e as MeshError {
            await bus.close()
            throw CtlError(message: "\(e.code): \(e.message)")
        } catch {
            await bus.close()
            throw error
        }
    }

    /// Prints `object` as JSON, or `text` otherwise.
    func emit(_ object: Any, text: @autoclosure () -> String) throws {
        if json {
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(text())
        }
    }
}

/// A failure reported to the user as one line on stderr.
struct CtlError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

/// A caller for the services: the stored user's own role, never a guess.
func caller(_ client: ProvisionClient, tenant: String, user: String) async throws(MeshError) -> Mesh_V1_Caller {
    let u = try await client.getUser(tenantID: tenant, userID: user)
    var c = Mesh_V1_Caller()
    c.tenantID = u.tenantID
    c.userID = u.id
    c.role = u.role
    c.requestID = "meshctl-" + UUID().uuidString.lowercased()
    return c
}

func iso(_ ms: Int64) -> String { Timestamp.iso(ms: ms) }

func planArgument(_ s: String) throws -> Mesh_V1_Plan {
    guard let p = Mesh_V1_Plan(key: s) else { throw ValidationError("plan must be free, pro, team or enterprise") }
    return p
}

// MARK: Tenants

struct Tenant: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create, change and list tenants.", subcommands: [Create.self, SetPlan.self, List.self])

    static func json(_ t: Mesh_V1_Tenant) -> [String: Any] {
        ["id": t.id, "name": t.name, "plan": t.plan.key, "require_saml": t.requireSaml, "ipv4_prefix": t.ipv4Prefix,
         "ipv6_prefix": t.ipv6Prefix, "revision": t.revision, "created_at": iso(t.createdAtMs)]
    }

    static func line(_ t: Mesh_V1_Tenant) -> String {
        "\(t.id)  \(t.plan.key)\(t.requireSaml ? " (saml)" : "")  \(t.ipv4Prefix)  \(t.ipv6Prefix)  \(t.name)"
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a tenant on a plan.")
        @OptionGroup var options: CtlOptions
        @Option(help: "Display name.") var name: String
        @Option(help: "free, pro, team or enterprise.") var plan: String = "free"
        @Option(help: "Explicit tenant id (UUID); generated when absent.") var id: String?
        @Flag(help: "Enterprise only: device creation needs a SAML-authenticated session.") var requireSaml = false

        func run() async throws {
            var r = Mesh_V1_CreateTenantRequest()
            r.name = name
            r.plan = try planArgument(plan)
            r.id = id ?? ""
            r.requireSaml = requireSaml
            let t = try await options.withProvision { try await $0.createTenant(r) }
            try options.emit(Tenant.json(t), text: t.id)
        }
    }

    struct SetPlan: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "set-plan", abstract: "Change a tenant's plan (and SAML gate).")
        @OptionGroup var options: CtlOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "free, pro, team or enterprise.") var plan: String
        @Option(help: "true or false: require SAML for device creation (Enterprise only).") var requireSaml: Bool?

        func run() async throws {
            var r = Mesh_V1_UpdateTenantRequest()
            r.tenantID = tenant
            r.plan = try planArgument(plan)
            if let requireSaml {
                r.setRequireSaml = true
                r.requireSaml = requireSaml
            }
            let t = try await options.withProvision { try await $0.updateTenant(r) }
            try options.emit(Tenant.json(t), text: Tenant.line(t))
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List tenants.")
        @OptionGroup var options: CtlOptions

        func run() async throws {
            let all = try await options.withProvision { try await $0.listTenants() }
            try options.emit(["tenants": all.map(Tenant.json)], text: all.map(Tenant.line).joined(separator: "\n"))
        }
    }
}

// MARK: Users

struct User: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create, invite, list and remove users; change their role.",
                                                    subcommands: [Create.self, Invite.self, List.self, SetRole.self, Delete.self])

    static func json(_ u: Mesh_V1_User) -> [String: Any] {
        ["id": u.id, "tenant_id": u.tenantID, "name": u.name, "role": u.role.key, "created_at": iso(u.createdAtMs), "status": u.status.key,
         "email": u.email.isEmpty ? NSNull() : u.email as Any,
         "identity": u.status == .active && !u.identitySubject.isEmpty ? ["issuer": u.identityIssuer, "subject": u.identitySubject] as Any : NSNull(),
         "last_sign_in_at": u.lastSignInAtMs > 0 ? iso(u.lastSignInAtMs) : NSNull()]
    }

    static func line(_ u: Mesh_V1_User) -> String {
        let who = u.email.isEmpty ? (u.identitySubject.isEmpty ? "" : "  \(u.identitySubject)") : "  \(u.email)"
        return "\(u.id)  \(u.role.key)  \(u.status.key)  \(u.name)\(who)"
    }

    struct Invite: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Invite a person by email or by their subject at the identity provider; the first matching sign-in binds it.")
        @OptionGroup var options: CtlOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "An admin user of the tenant.") var admin: String
        @Option(help: "The person's email (bound when the provider says it is verified).") var email: String?
        @Option(help: "The person's subject (sub) at the provider.") var subject: String?
        @Option(help: "With --subject: the provider's issuer URL (any provider when absent).") var issuer: String?
        @Option(help: "owner or admin.") var role: String = "owner"
        @Option(help: "Display name (the email or subject when absent).") var name: String?
        @Option(help: "Days the invitation stays valid (1-90, default 7).") var days: UInt32?

        func run() async throws {
            guard let r = Mesh_V1_Role(key: role) else { throw ValidationError("role must be owner or admin") }
            guard (email == nil) != (subject == nil) else { throw ValidationError("give --email or --subject, one of the two") }
            let u = try await options.withProvision { client in
                var req = Mesh_V1_InviteUserRequest()
                req.caller = try await caller(client, tenant: tenant, user: admin)
                req.email = email ?? ""
                req.subject = subject ?? ""
                req.issuer = issuer ?? ""
                req.role = r
                req.name = name ?? ""
                req.ttlSeconds = (days ?? 0) * 86400
                return try await client.inviteUser(req)
            }
            try options.emit(User.json(u), text: u.id)
        }
    }

    struct SetRole: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "set-role", abstract: "Change a user's role (a tenant keeps at least one admin).")
        @OptionGroup var options: CtlOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "An admin user of the tenant.") var admin: String
        @Option(help: "The user whose role changes.") var user: String
        @Option(help: "owner or admin.") var role: String

        func run() async throws {
            guard let r = Mesh_V1_Role(key: role) else { throw ValidationError("role must be owner or admin") }
            let u = try await options.withProvision { client in
                try await client.setUserRole(caller: try await caller(client, tenant: tenant, user: admin), userID: user, role: r)
            }
            try options.emit(User.json(u), text: User.line(u))
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove a user (or cancel an invitation): their sessions and API tokens end at once; their devices are deleted or reassigned.")
        @OptionGroup var options: CtlOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "An admin user of the tenant.") var admin: String
        @Option(help: "The user to remove.") var user: String
        @Option(help: "What happens to the user's devices: delete or reassign (required when there are any).") var devices: String?
        @Option(name: .customLong("to"), help: "With --devices reassign: the user who gets them.") var reassignTo: String?

        func run() async throws {
            var d = Mesh_V1_DeviceDisposition.unspecified
            switch devices {
            case nil: break
            case "delete": d = .delete
            case "reassign":
                guard reassignTo != nil else { throw ValidationError("--devices reassign needs --to USER") }
                d = .reassign
            default: throw ValidationError("--devices must be delete or reassign")
            }
            let r = try await options.withProvision { client in
                try await client.deleteUser(caller: try await caller(client, tenant: tenant, user: admin), userID: user, devices: d,
                                            reassignTo: reassignTo ?? "")
            }
            try options.emit(["user_id": user.lowercased(), "devices_deleted": r.devicesDeleted, "devices_reassigned": r.devicesReassigned],
                             text: "removed \(user.lowercased()): \(r.devicesDeleted) device(s) deleted, \(r.devicesReassigned) reassigned")
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a user in a tenant.")
        @OptionGroup var options: CtlOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "Display name.") var name: String
        @Option(help: "owner or admin.") var role: String = "owner"
        @Option(help: "Explicit user id (UUID); generated when absent.") var id: String?

        func run() async throws {
            guard let r = Mesh_V1_Role(key: role) else { throw ValidationError("role must be owner or admin") }
            var req = Mesh_V1_CreateUserRequest()
            req.tenantID = tenant
            req.name = name
            req.role = r
            req.id = id ?? ""
            let u = try await options.withProvision { try await $0.createUser(req) }
            try options.emit(User.json(u), text: u.id)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List a tenant's users.")
        @OptionGroup var options: CtlOptions
        @Option(help: "Tenant id.") var tenant: String

        func run() async throws {
            let users = try await options.withProvision { try await $0.listUsers(tenantID: tenant) }
            try options.emit(["users": users.map(User.json)], text: users.map(User.line).joined(separator: "\n"))
        }
    }
}

// MARK: Tokens

struct Token: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Mint bearer tokens with the Gateway's signing key.", subcommands: [UserToken.self, NodeToken.self])

    static func minter() async throws -> TokenMinter {
        do {
            return try await TokenMinter(keys: try JWTKeyMaterial.fromEnvironment(secret: Env.secret))
        } catch let e as MeshError {
            throw CtlError(message: e.message)
        }
    }

    struct UserToken: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "user", abstract: "A user token (sub = user id, tenant, role, exp, amr).")
        @Flag(name: .customLong("json"), help: "Print JSON.") var json = false
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "User id.") var user: String
        @Option(help: "owner or admin (the services use the stored role; this is what the token claims).") var role: String = "owner"
        @Option(help: "Lifetime in seconds.") var ttl: Int = 3600
        @Option(help: "Authentication method to claim, e.g. saml (repeatable).") var amr: [String] = []

        func validate() throws {
            guard UUID(uuidString: tenant) != nil, UUID(uuidString: user) != nil else { throw ValidationError("--tenant and --user must be UUIDs") }
            guard Mesh_V1_Role(key: role) != nil else { throw ValidationError("role must be owner or admin") }
            guard ttl > 0 else { throw ValidationError("--ttl must be positive") }
        }

        func run() async throws {
            let now = Date()
            let token = try await Token.minter().user(tenantID: tenant, userID: user, role: Mesh_V1_Role(key: role)!, ttl: .seconds(ttl),
                                                      amr: amr.isEmpty ? nil : amr, now: now)
            try printToken(token, json: json, expires: now.addingTimeInterval(Double(ttl)))
        }
    }

    struct NodeToken: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "node", abstract: "A node's CC-agent token (sub = node:<id>, tenant, exp).")
        @Flag(name: .customLong("json"), help: "Print JSON.") var json = false
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "Node id.") var node: String
        @Option(help: "Lifetime in seconds.") var ttl: Int = 86400

        func validate() throws {
            guard UUID(uuidString: tenant) != nil, UUID(uuidString: node) != nil else { throw ValidationError("--tenant and --node must be UUIDs") }
            guard ttl > 0 else { throw ValidationError("--ttl must be positive") }
        }

        func run() async throws {
            let now = Date()
            let token = try await Token.minter().node(tenantID: tenant, nodeID: node, ttl: .seconds(ttl), now: now)
            try printToken(token, json: json, expires: now.addingTimeInterval(Double(ttl)))
        }
    }
}

func printToken(_ token: String, json: Bool, expires: Date) throws {
    if json {
        let data = try JSONSerialization.data(withJSONObject: ["token": token, "expires_at": iso(expires.unixMilliseconds)], options: [.sortedKeys])
        print(String(decoding: data, as: UTF8.self))
    } else {
        print(token)
    }
}

// MARK: Devices

struct Device: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List, show, rename, suspend and resume devices, set their expiry, and re-issue their configs.",
        subcommands: [List.self, Get.self, Rename.self, Suspend.self, Resume.self, SetExpiry.self, Reissue.self])

    static func json(_ d: Mesh_V1_Device) -> [String: Any] {
        var o: [String: Any] = [
            "id": d.id, "label": d.label, "slug": d.slug, "dns_name": d.dnsName, "type": d.type.key, "mesh_ips": [d.ipv4, d.ipv6],
            "owner_user_id": d.ownerUserID, "owner_name": d.ownerName, "online": d.online, "created_at": iso(d.createdAtMs),
            "last_handshake_at": d.lastHandshakeAtMs > 0 ? iso(d.lastHandshakeAtMs) : NSNull(), "status": d.status.key,
            "suspend_reason": d.suspendReason == .unspecified ? NSNull() : d.suspendReason.key,
            "suspended_at": d.suspendedAtMs > 0 ? iso(d.suspendedAtMs) : NSNull(),
            "expires_at": d.expiresAtMs > 0 ? iso(d.expiresAtMs) : NSNull(),
        ]
        // Per-peer stats only where the plan includes them.
        if d.perPeerStats {
            o["rx_bytes"] = d.rxBytes
            o["tx_bytes"] = d.txBytes
            o["endpoint"] = d.endpoint.isEmpty ? NSNull() : d.endpoint
        }
        return o
    }

    static func line(_ d: Mesh_V1_Device) -> String {
        let state = d.status == .active ? (d.online ? "online   " : "offline  ") : (d.status == .expired ? "expired  " : "suspended")
        let expires = d.expiresAtMs > 0 ? "  expires \(iso(d.expiresAtMs))" : ""
        return "\(d.id)  \(state)  \(d.ipv4)  \(d.dnsName)  \(d.label)\(expires)"
    }

    /// The options that name one device as one user.
    struct Target: ParsableArguments {
        @Option(help: "Tenant id.") var tenant: String
        @Option(name: .customLong("as"), help: "The user acting (the device's owner, or an admin of the tenant).") var user: String
        @Option(help: "The device's id.") var device: String
    }

    struct Reissue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Give a device a new keypair and a fresh config (the old config stops working); prints the new wg-quick config.",
            discussion: "The device keeps its addresses and name. Writes the config to --output (mode 0600) when given, else to standard output.")
        @OptionGroup var options: CtlOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(name: .customLong("as"), help: "The device's owner or an admin of the tenant.") var user: String
        @Option(help: "The device's id.") var device: String
        @Option(help: "Write the config to this file (mode 0600) instead of standard output.") var output: String?

        func run() async throws {
            let r = try await options.withProvision { client in
                try await client.reissueDevice(caller: try await caller(client, tenant: tenant, user: user), deviceID: device)
            }
            if let output {
                guard FileManager.default.createFile(atPath: output, contents: Data(r.config.utf8), attributes: [.posixPermissions: 0o600]) else {
                    throw CtlError(message: "cannot write \(output)")
                }
            }
            let json: [String: Any] = ["device_id": r.device.id, "dns_name": r.device.dnsName,
                                       "config": output == nil ? r.config as Any : NSNull(), "output": output.map { $0 as Any } ?? NSNull()]
            try options.emit(json,
                             text: output.map { "wrote the new config of \(r.device.dnsName) to \($0)" } ?? r.config)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the devices a user sees (an admin sees the whole tenant), oldest first.")
        @OptionGroup var options: CtlOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(name: .customLong("as"), help: "The user to list as (an admin sees every device of the tenant).") var user: String
        @Option(help: "Only this owner's devices (a user id, or me).") var owner: String?
        @Option(help: "Only devices in this state: active, suspended or expired.") var status: String?
        @Option(help: "Only devices of this type: iphone, android, laptop or other.") var type: String?
        @Option(help: "One page of this many (1-500) instead of every device.") var limit: UInt32?
        @Option(help: "Where the page starts (the next_cursor of the previous page).") var cursor: String?

        func run() async throws {
            var r = Mesh_V1_ListDevicesRequest()
            if let status {
                guard let s = Mesh_V1_DeviceStatus(key: status) else { throw ValidationError("--status must be active, suspended or expired") }
                r.status = s
            }
            if let type {
                guard let t = Mesh_V1_DeviceType(key: type), t.key == type else { throw ValidationError("--type must be iphone, android, laptop or other") }
                r.type = t
            }
            let (devices, next) = try await options.withProvision { client in
                r.caller = try await caller(client, tenant: tenant, user: user)
                if let owner { r.ownerUserID = owner == "me" ? r.caller.userID : owner }
                r.cursor = cursor ?? ""
                if let limit {
                    r.limit = limit
                    let page = try await client.listDevices(r)
                    return (page.devices, page.nextCursor)
                }
                r.limit = 500
                var all: [Mesh_V1_Device] = []
                while true {
                    let page = try await client.listDevices(r)
                    all += page.devices
                    if page.nextCursor.isEmpty { return (all, "") }
                    r.cursor = page.nextCursor
                }
            }
            try options.emit(["devices": devices.map(Device.json), "next_cursor": next.isEmpty ? NSNull() : next as Any],
                             text: devices.map(Device.line).joined(separator: "\n") + (next.isEmpty ? "" : "\nnext page: --cursor \(next)"))
        }
    }

    struct Get: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one device.")
        @OptionGroup var options: CtlOptions
        @OptionGroup var target: Target

        func run() async throws {
            let d = try await options.withProvision { client in
                try await client.getDevice(caller: try await caller(client, tenant: target.tenant, user: target.user), deviceID: target.device)
            }
            try options.emit(Device.json(d), text: Device.line(d))
        }
    }

    struct Rename: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Give a device a new label: its slug and DNS name change with it, and the old name stops resolving.")
        @OptionGroup var options: CtlOptions
        @OptionGroup var target: Target
        @Option(help: "The new label (1-63 characters, shown as typed).") var label: String

        func run() async throws {
            let r = try await options.withProvision { client in
                try await client.renameDevice(caller: try await caller(client, tenant: target.tenant, user: target.user), deviceID: target.device, label: label)
            }
            try options.emit(Device.json(r.device), text: Device.line(r.device))
        }
    }

    struct Suspend: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Suspend a device: it leaves every node and the mesh DNS, and keeps its keys, addresses, name and plan slot.")
        @OptionGroup var options: CtlOptions
        @OptionGroup var target: Target

        func run() async throws {
            let r = try await options.withProvision { client in
                try await client.suspendDevice(caller: try await caller(client, tenant: target.tenant, user: target.user), deviceID: target.device)
            }
            try options.emit(["device": Device.json(r.device), "revision": r.revision], text: Device.line(r.device))
        }
    }

    struct Resume: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Resume a suspended device (refused while its expiry has passed: an admin extends it with set-expiry).")
        @OptionGroup var options: CtlOptions
        @OptionGroup var target: Target

        func run() async throws {
            let r = try await options.withProvision { client in
                try await client.resumeDevice(caller: try await caller(client, tenant: target.tenant, user: target.user), deviceID: target.device)
            }
            try options.emit(["device": Device.json(r.device), "revision": r.revision], text: Device.line(r.device))
        }
    }

    struct SetExpiry: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set-expiry",
            abstract: "Set, extend or clear a device's expiry (admins). A device suspended because it expired comes back.")
        @OptionGroup var options: CtlOptions
        @OptionGroup var target: Target
        @Option(help: "An RFC 3339 time (2026-12-31T23:59:59Z), a lifetime from now (30d, 12h, 90m), or never.") var at: String

        func run() async throws {
            let ms: Int64
            if at == "never" {
                ms = 0
            } else if let parsed = Timestamp.parseRFC3339(at) {
                ms = parsed
            } else if let seconds = lifetimeSeconds(at) {
                ms = Date().addingTimeInterval(Double(seconds)).unixMilliseconds
            } else {
                throw ValidationError("--at must be an RFC 3339 time, a lifetime such as 30d, or never")
            }
            let r = try await options.withProvision { client in
                try await client.setDeviceExpiry(caller: try await caller(client, tenant: target.tenant, user: target.user), deviceID: target.device,
                                                 expiresAtMs: ms)
            }
            try options.emit(["device": Device.json(r.device), "revision": r.revision], text: Device.line(r.device))
        }
    }
}

/// "30d", "12h", "90m", "45s" or plain seconds; nil for anything else.
func lifetimeSeconds(_ s: String) -> Int? {
    let units: [Character: Int] = ["d": 86_400, "h": 3600, "m": 60, "s": 1]
    if let last = s.last, let unit = units[last], let n = Int(s.dropLast()), n > 0 { return n * unit }
    return Int(s).flatMap { $0 > 0 ? $0 : nil }
}

// MARK: Nodes

struct Node: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List, enroll and remove nodes; choose the hub.",
                                                    subcommands: [List.self, Enroll.self, Remove.self, SetHub.self])

    struct SetHub: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set-hub",
            abstract: "Make a node the tenant's hub. Configs that route through the old hub are marked outdated (they work while it lives).")
        @OptionGroup var options: CtlOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "An admin user of the tenant.") var admin: String
        @Option(help: "The node's id.") var node: String

        func run() async throws {
            let r = try await options.withProvision { client in
                try await client.setHub(caller: try await caller(client, tenant: tenant, user: admin), nodeID: node)
            }
            try options.emit(["node_id": r.node.id, "hub": r.node.hub, "revision": r.revision], text: "\(r.node.name) is the hub (revision \(r.revision))")
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove a node from the mesh: its peers drop it, its address is released, and (on a secured bus) its bus key is revoked.")
        @OptionGroup var options: CtlOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "An admin user of the tenant.") var admin: String
        @Option(help: "The node's id.") var node: String

        func run() async throws {
            let r = try await options.withProvision { client in
                try await client.deregisterNode(caller: try await caller(client, tenant: tenant, user: admin), nodeID: node)
            }
            try options.emit(["node_id": node.lowercased(), "revision": r.revision], text: "removed \(node.lowercased()) at revision \(r.revision)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List a tenant's nodes (the hub first).")
        @OptionGroup var options: CtlOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(name: .customLong("as"), help: "A user of the tenant to list as.") var user: String
        @Flag(help: "Admins: ask every node for its live state (online, backend, revision, last sync).") var live = false

        func run() async throws {
            let listed = try await options.withProvision { client in
                try await client.listNodes(caller: try await caller(client, tenant: tenant, user: user), live: live)
            }
            let nodes = listed.filter(\.hub) + listed.filter { !$0.hub }
            let rows: [[String: Any]] = nodes.map { n in
                var o: [String: Any] = [
                    "id": n.id, "name": n.name, "slug": n.slug, "dns_name": n.dnsName, "public_key": n.publicKey, "endpoint": n.endpoint,
                    "listen_port": n.listenPort, "mesh_ips": [n.ipv4, n.ipv6], "hub": n.hub, "created_at": iso(n.createdAtMs),
                    "last_seen_at": n.lastSeenAtMs > 0 ? iso(n.lastSeenAtMs) : NSNull()]
                if live {
                    let answered = n.live && n.stateError.isEmpty
                    o["online"] = n.online
                    o["backend"] = answered && !n.backend.isEmpty ? n.backend : NSNull()
                    o["revision"] = answered ? n.appliedRevision as Any : NSNull()
                    o["last_sync_at"] = answered && n.lastSyncAtMs > 0 ? iso(n.lastSyncAtMs) : NSNull()
                    o["state_error"] = n.stateError.isEmpty ? NSNull() : n.stateError
                }
                return o
            }
            try options.emit(["nodes": rows], text: nodes.map { n in
                let state = live ? (n.online ? "  online  \(n.backend)" : "  offline (\(n.stateError))") : ""
                return "\(n.id)  \(n.hub ? "hub " : "    ")  \(n.ipv4)  \(n.endpoint)  \(n.dnsName)\(state)"
            }.joined(separator: "\n"))
        }
    }

    struct Enroll: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an enrollment token that lets a NodeApplier register into the tenant.")
        @OptionGroup var options: CtlOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "An admin user of the tenant.") var admin: String
        @Option(help: "Lifetime in seconds.") var ttl: UInt32 = 3600
        @Option(help: "How many nodes may register with it.") var uses: UInt32 = 1

        func run() async throws {
            let r = try await options.withProvision { client in
                try await client.createEnrollmentToken(caller: try await caller(client, tenant: tenant, user: admin), ttlSeconds: ttl, maxUses: uses)
            }
            try options.emit(["token": r.token, "expires_at": iso(r.expiresAtMs)], text: r.token)
        }
    }
}

// MARK: Mesh switch and settings

struct Mesh: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Turn a tenant's mesh on or off (admins): off takes every device off every node and refuses new ones.",
        subcommands: [On.self, Off.self])

    static func set(_ on: Bool, options: CtlOptions, tenant: String, admin: String) async throws {
        let r = try await options.withProvision { client in
            var req = Mesh_V1_UpdateTenantSettingsRequest()
            req.caller = try await caller(client, tenant: tenant, user: admin)
            req.meshEnabled = on
            return try await client.updateTenantSettings(req)
        }
        try options.emit(Settings.json(r.settings).merging(["revision": r.revision]) { a, _ in a },
                         text: "mesh \(r.settings.meshEnabled ? "on" : "off")\(r.revision > 0 ? " at revision \(r.revision)" : " (unchanged)")")
    }

    struct On: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Turn the mesh on: every device that is not suspended is back on every node.")
        @OptionGroup var options: CtlOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "An admin user of the tenant.") var admin: String
        func run() async throws { try await Mesh.set(true, options: options, tenant: tenant, admin: admin) }
    }

    struct Off: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Turn the mesh off: no node holds any device; devices, addresses and names are kept; creation is refused.")
        @OptionGroup var options: CtlOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "An admin user of the tenant.") var admin: String
        func run() async throws { try await Mesh.set(false, options: options, tenant: tenant, admin: admin) }
    }
}

struct Settings: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a tenant's settings, or change the default lifetime of new devices (admins).")
    @OptionGroup var options: CtlOptions
    @Option(help: "Tenant id.") var tenant: String
    @Option(name: .customLong("as"), help: "A user of the tenant (an admin to change anything).") var user: String
    @Option(name: .customLong("device-lifetime"), help: "Default lifetime of new devices: 30d, 12h, seconds, or off.") var deviceLifetime: String?

    static func json(_ s: Mesh_V1_TenantAdminSettings) -> [String: Any] {
        ["mesh_enabled": s.meshEnabled, "device_lifetime_seconds": s.deviceLifetimeSeconds > 0 ? s.deviceLifetimeSeconds as Any : NSNull()]
    }

    static func text(_ s: Mesh_V1_TenantAdminSettings) -> String {
        "mesh \(s.meshEnabled ? "on" : "off"); device lifetime \(s.deviceLifetimeSeconds > 0 ? DeviceLifecycle.describe(TimeInterval(s.deviceLifetimeSeconds)) : "off")"
    }

    func run() async throws {
        var seconds: UInt32?
        if let deviceLifetime {
            if deviceLifetime == "off" {
                seconds = 0
            } else {
                guard let v = lifetimeSeconds(deviceLifetime), let u = UInt32(exactly: v) else {
                    throw ValidationError("--device-lifetime must be like 30d, 12h or 3600, or off")
                }
                seconds = u
            }
        }
        let settings = try await options.withProvision { client in
            let c = try await caller(client, tenant: tenant, user: user)
            guard let seconds else { return try await client.tenantSettings(caller: c) }
            var req = Mesh_V1_UpdateTenantSettingsRequest()
            req.caller = c
            req.deviceLifetimeSeconds = seconds
            return try await client.updateTenantSettings(req).settings
        }
        try options.emit(Settings.json(settings), text: Settings.text(settings))
    }
}

// MARK: Audit

struct Audit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show or export a tenant's audit log, newest first (Team and Enterprise).")
    @OptionGroup var options: CtlOptions
    @Option(help: "Tenant id.") var tenant: String
    @Option(help: "An admin user of the tenant.") var admin: String
    @Option(help: "Entries with an id below this (paging).") var before: Int64 = 0
    @Option(help: "Entries to show (1-500).") var limit: UInt32 = 50
    @Option(help: "Only this action (device.suspend), or a family (device).") var action: String = ""
    @Option(help: "Only this actor (user:<id>, node:<id>, system).") var actor: String = ""
    @Option(help: "Write every matching entry to stdout as csv or jsonl, page by page.") var export: String?

    func run() async throws {
        if let export {
            guard export == "csv" || export == "jsonl" else { throw ValidationError("--export must be csv or jsonl") }
            try await options.withProvision { client in
                let c = try await caller(client, tenant: tenant, user: admin)
                if export == "csv" { FileHandle.standardOutput.write(Data("id,at,actor,action,target_id,request_id,detail\r\n".utf8)) }
                var before = self.before
                while true {
                    let page = try await client.audit(caller: c, beforeID: before, limit: 500, action: action, actor: actor)
                    var out = ""
                    for e in page.entries { out += export == "csv" ? Audit.csvLine(e) : Audit.jsonLine(e) }
                    FileHandle.standardOutput.write(Data(out.utf8))
                    guard page.nextBeforeID > 0 else { return }
                    before = page.nextBeforeID
                }
            }
            return
        }
        let page = try await options.withProvision { client in
            try await client.audit(caller: try await caller(client, tenant: tenant, user: admin), beforeID: before, limit: limit, action: action,
                                   actor: actor)
        }
        let rows: [[String: Any]] = page.entries.map(Audit.json)
        try options.emit(["entries": rows, "next_before": page.nextBeforeID > 0 ? page.nextBeforeID as Any : NSNull()],
                         text: page.entries.map { "\($0.id)  \(iso($0.atMs))  \($0.actor)  \($0.action)  \($0.detail)" }.joined(separator: "\n"))
    }

    static func json(_ e: Mesh_V1_AuditEntry) -> [String: Any] {
        ["id": e.id, "at": iso(e.atMs), "actor": e.actor, "action": e.action, "target_id": e.targetID, "request_id": e.requestID, "detail": e.detail]
    }

    static func jsonLine(_ e: Mesh_V1_AuditEntry) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: json(e), options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return String(decoding: data, as: UTF8.self) + "\n"
    }

    static func csvLine(_ e: Mesh_V1_AuditEntry) -> String {
        func field(_ s: String) -> String {
            var v = s
            if let first = v.unicodeScalars.first, ["=", "+", "-", "@", "\t", "\r"].contains(first) { v = "'" + v }
            guard v.unicodeScalars.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return v }
            return "\"" + v.replacingOccurrences(of: "\"", with: "\"\"") + "\""
        }
        return [String(e.id), iso(e.atMs), e.actor, e.action, e.targetID, e.requestID, e.detail].map(field).joined(separator: ",") + "\r\n"
    }
}
