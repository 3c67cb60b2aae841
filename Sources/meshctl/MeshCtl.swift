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
            Talks to the services over NATS (MESH_NATS_URL and the other MESH_NATS_* settings). Tokens are signed \
            with MESH_JWT_SECRET[_FILE] (HS256), or MESH_JWT_EDDSA_PRIVATE_KEY[_FILE] (EdDSA) when no secret is set. \
            --json prints one JSON document on stdout for scripts.
            """,
        subcommands: [Tenant.self, User.self, Token.self, Device.self, Node.self, Policy.self, Audit.self, Bus.self, ServiceCommand.self])
}

/// Options every subcommand shares.
struct CtlOptions: ParsableArguments {
    @Option(name: .customLong("nats-url"), help: "NATS server URLs, comma-separated (env MESH_NATS_URL).")
    var natsURL: String = Env.string("MESH_NATS_URL", "nats://127.0.0.1:4222")

    @Flag(name: .customLong("json"), help: "Print JSON (for scripts).")
    var json = false

    @Option(name: .customLong("timeout"), help: "Seconds to wait for a service.")
    var timeout: Double = 10

    /// A bus connection for one command.
    func connect(inboxPrefix: String = "_INBOX") async throws -> BusConnection {
        var common = CommonOptions()
        common.natsURL = natsURL
        common.instance = "meshctl"
        var logger = Logger(label: "meshctl")
        logger.logLevel = .error
        var config = try common.busConfiguration(name: "meshctl", inboxPrefix: inboxPrefix)
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
    static let configuration = CommandConfiguration(abstract: "List devices and re-issue their configs.", subcommands: [List.self, Reissue.self])

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
        static let configuration = CommandConfiguration(abstract: "List the devices a user sees (an admin sees the whole tenant).")
        @OptionGroup var options: CtlOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(name: .customLong("as"), help: "The user to list as (an admin sees every device of the tenant).") var user: String

        func run() async throws {
            let devices = try await options.withProvision { client in
                try await client.listDevices(caller: try await caller(client, tenant: tenant, user: user))
            }
            let rows: [[String: Any]] = devices.map { d in
                ["id": d.id, "label": d.label, "slug": d.slug, "dns_name": d.dnsName, "type": d.type.key, "mesh_ips": [d.ipv4, d.ipv6],
                 "owner_user_id": d.ownerUserID, "online": d.online, "created_at": iso(d.createdAtMs),
                 "last_handshake_at": d.lastHandshakeAtMs > 0 ? iso(d.lastHandshakeAtMs) : NSNull(), "rx_bytes": d.rxBytes, "tx_bytes": d.txBytes]
            }
            try options.emit(["devices": rows], text: devices.map {
                "\($0.id)  \($0.online ? "online " : "offline")  \($0.ipv4)  \($0.dnsName)  \($0.label)"
            }.joined(separator: "\n"))
        }
    }
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

        func run() async throws {
            let nodes = try await options.withProvision { client in
                try await client.listNodes(caller: try await caller(client, tenant: tenant, user: user))
            }
            let rows: [[String: Any]] = nodes.map { n in
                ["id": n.id, "name": n.name, "slug": n.slug, "dns_name": n.dnsName, "public_key": n.publicKey, "endpoint": n.endpoint,
                 "listen_port": n.listenPort, "mesh_ips": [n.ipv4, n.ipv6], "hub": n.hub, "created_at": iso(n.createdAtMs),
                 "last_seen_at": n.lastSeenAtMs > 0 ? iso(n.lastSeenAtMs) : NSNull()]
            }
            try options.emit(["nodes": rows], text: nodes.map {
                "\($0.id)  \($0.hub ? "hub " : "    ")  \($0.ipv4)  \($0.endpoint)  \($0.dnsName)"
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

// MARK: Audit

struct Audit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a tenant's audit log, newest first (Team and Enterprise).")
    @OptionGroup var options: CtlOptions
    @Option(help: "Tenant id.") var tenant: String
    @Option(help: "An admin user of the tenant.") var admin: String
    @Option(help: "Entries with an id below this (paging).") var before: Int64 = 0
    @Option(help: "Entries to show (1-500).") var limit: UInt32 = 50

    func run() async throws {
        let page = try await options.withProvision { client in
            try await client.audit(caller: try await caller(client, tenant: tenant, user: admin), beforeID: before, limit: limit)
        }
        let rows: [[String: Any]] = page.entries.map { e in
            ["id": e.id, "at": iso(e.atMs), "actor": e.actor, "action": e.action, "target_id": e.targetID, "request_id": e.requestID, "detail": e.detail]
        }
        try options.emit(["entries": rows, "next_before": page.nextBeforeID > 0 ? page.nextBeforeID as Any : NSNull()],
                         text: page.entries.map { "\($0.id)  \(iso($0.atMs))  \($0.actor)  \($0.action)  \($0.detail)" }.joined(separator: "\n"))
    }
}
