import Foundation
import MeshDomain

/// The OpenAPI 3.1 description of every route, served at `GET /openapi.json`.
///
/// GatewayTests fails when a route of ``GatewayApp/router(api:webRoot:)`` is missing here, and
/// validates the document with openapi-spec-validator.
public enum OpenAPIDocument {
    /// The document as JSON bytes (built once).
    public static let json: [UInt8] = {
        let data = (try? JSONSerialization.data(withJSONObject: document, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        return [UInt8](data)
    }()

    /// Every documented operation as (method, path template), e.g. ("DELETE", "/api/mesh/devices/{id}").
    public static var operations: [(method: String, path: String)] {
        let paths = document["paths"] as? [String: [String: Any]] ?? [:]
        return paths.flatMap { path, ops in ops.keys.filter { $0 != "parameters" }.map { ($0.uppercased(), path) } }
    }

    // MARK: Building blocks

    static func ref(_ name: String) -> [String: Any] { ["$ref": "#/components/schemas/\(name)"] }
    static func json(_ schema: [String: Any]) -> [String: Any] { ["application/json": ["schema": schema]] }
    static func ok(_ description: String, _ schema: String) -> [String: Any] { ["description": description, "content": json(ref(schema))] }
    static func error(_ description: String) -> [String: Any] { ["description": description, "content": json(ref("Error"))] }
    static var noContent: [String: Any] { ["description": "Done; no body."] }
    static var string: [String: Any] { ["type": "string"] }
    static var nullableString: [String: Any] { ["type": ["string", "null"]] }
    static var dateTime: [String: Any] { ["type": "string", "format": "date-time"] }
    static var nullableDateTime: [String: Any] { ["type": ["string", "null"], "format": "date-time"] }
    static var bool: [String: Any] { ["type": "boolean"] }
    static var uint: [String: Any] { ["type": "integer", "minimum": 0] }
    static var stringArray: [String: Any] { ["type": "array", "items": ["type": "string"]] }

    static func object(_ properties: [String: Any], required: [String]? = nil, closed: Bool = true) -> [String: Any] {
        var o: [String: Any] = ["type": "object", "properties": properties, "required": required ?? properties.keys.sorted()]
        if closed { o["additionalProperties"] = false }
        return o
    }

    static func uuidPath(_ name: String, _ description: String) -> [String: Any] {
        ["name": name, "in": "path", "required": true, "description": description, "schema": ["type": "string", "format": "uuid"]]
    }

    static var requestIDHeader: [String: Any] { [
        "name": "X-Request-Id", "in": "header", "required": false,
        "description": "A request id to use: kept when it is letters, digits and ._:- (at most 128), replaced by a new UUID otherwise (any value is accepted). Echoed on every response.",
        "schema": ["type": "string"],
    ] }

    /// An operation. `auth`: "user", "admin", "node" or nil (public).
    /// The query of a page of the device list: `GET /api/mesh/devices` and its live channel.
    static var deviceListParameters: [[String: Any]] { [
        queryString("cursor", "next_cursor of the previous page."),
        ["name": "limit", "in": "query", "required": false, "description": "Page size (default 100).",
         "schema": ["type": "integer", "minimum": 1, "maximum": 500]],
        queryString("owner", "A user id, or \"me\"."),
        ["name": "status", "in": "query", "required": false, "description": "Only devices in this state.",
         "schema": ["type": "string", "enum": ["active", "suspended", "expired"]]],
        ["name": "type", "in": "query", "required": false, "schema": ref("DeviceType")],
    ] }

    static func op(_ summary: String, _ description: String, id: String, auth: String?, parameters: [[String: Any]] = [],
                   body: [String: Any]? = nil, responses: [String: Any]) -> [String: Any] {
        var r = responses
        r["default"] = error("Any other error (see the Error schema and docs/api.md).")
        if auth != nil {
            r["401"] = error("Missing, malformed, expired or wrongly signed token.")
            r["403"] = r["403"] ?? error(auth == "node" ? "Not a node token." : "Not allowed for this caller.")
            r["503"] = r["503"] ?? error("A service did not answer (no responders).")
            r["504"] = r["504"] ?? error("A service did not answer in time.")
        }
        var o: [String: Any] = ["summary": summary, "description": description, "operationId": id,
                                "parameters": [requestIDHeader] + parameters, "responses": r]
        if let body { o["requestBody"] = body }
        // Users may also call with the session cookie of a sign-in (node routes take node tokens only).
        o["security"] = auth == nil ? [] as [Any] : auth == "node" ? [["bearer": []]] : [["bearer": []], ["session": []]]
        return o
    }

    static func jsonBody(_ schema: String) -> [String: Any] { ["required": true, "content": json(ref(schema))] }

    static var redirect: [String: Any] {
        ["description": "A redirect (Location); a browser that sent Accept: text/html is also sent back to the page this way when the sign-in is refused, with the reason in the fragment.",
         "headers": ["Location": ["schema": string]]]
    }

    /// Sign-in, sessions, users and API tokens.
    static var accountPaths: [String: Any] {
        let id = uuidPath("id", "User id")
        return [
            "/api/auth/login": ["get": op("Start a sign-in", "Redirects to the identity provider's authorization endpoint (code flow, PKCE S256, state and nonce), with a sealed cookie holding the attempt. Without a provider configured: 404.",
                                          id: "signInStart", auth: nil,
                                          parameters: [
                                              ["name": "provider", "in": "query", "required": false, "description": "Provider id (may be left out when only one is configured).",
                                               "schema": ["type": "string", "maxLength": 32]],
                                              ["name": "return_to", "in": "query", "required": false, "description": "A path under /vpn/mesh to land on afterwards.",
                                               "schema": ["type": "string", "maxLength": 512]],
                                          ],
                                          responses: ["302": redirect, "303": redirect, "404": error("No such provider, or sign-in is not configured."),
                                                      "503": error("The provider or ProvisionSvc could not be reached.")])],
            "/api/auth/callback": ["get": op("Finish a sign-in", "The provider's redirect. Checks the attempt (this browser's cookie, state, age, single use), exchanges the code with the PKCE verifier, verifies the ID token (JWKS signature, iss, aud, exp, nonce), finds or binds the user, sets the session cookie and redirects to return_to. Refusals are 401 (403 for an identity without an account) with a reason.",
                                             id: "signInCallback", auth: nil,
                                             parameters: [
                                                 ["name": "state", "in": "query", "required": false, "schema": ["type": "string", "maxLength": 256]],
                                                 ["name": "code", "in": "query", "required": false, "schema": ["type": "string", "maxLength": 2048]],
                                                 ["name": "error", "in": "query", "required": false, "schema": ["type": "string", "maxLength": 256]],
                                             ],
                                             responses: ["303": redirect, "401": error("The sign-in was refused (reason says why); no session."),
                                                         "403": error("No account for this identity (not invited)."), "404": error("Sign-in is not configured."),
                                                         "503": error("The provider or ProvisionSvc could not be reached.")])],
            "/api/auth/session": ["get": op("Who am I", "The caller as ProvisionSvc knows them (stored role, status), their tenant, and how they authenticated: session (with its provider, amr and ends), api_token or bearer.",
                                            id: "sessionInfo", auth: "user", responses: ["200": ok("The caller.", "SessionInfo")])],
            "/api/auth/logout": ["post": op("Log out", "Ends the session (refused from then on, on every replica) and clears the cookie. Needs this site's Origin when sent with the cookie.",
                                            id: "logout", auth: nil, responses: ["204": noContent, "403": error("A cross-site request (Origin)."),
                                                                                  "503": error("ProvisionSvc could not be reached.")])],
            "/api/mesh/users": [
                "get": op("List users", "Admins: the tenant's users and pending invitations.", id: "listUsers", auth: "admin",
                          responses: ["200": ok("Users, oldest first.", "UserList")]),
                "post": op("Invite a user", "Admins: invite a person by email (bound at their first sign-in with a verified email) or by provider subject (and optionally issuer).",
                           id: "inviteUser", auth: "admin", body: jsonBody("InviteUserRequest"),
                           responses: ["201": ok("The invited user.", "User"), "400": error("Malformed body, both or neither of email and subject, bad role."),
                                       "409": error("The tenant already has a user or invitation for it."), "413": error("Body larger than the limit.")]),
            ],
            "/api/mesh/users/{id}": [
                "patch": op("Change a user's role", "Admins. A tenant keeps at least one admin (409).", id: "setUserRole", auth: "admin",
                            parameters: [id], body: jsonBody("SetRoleRequest"),
                            responses: ["200": ok("The user.", "User"), "400": error("Bad role."), "404": error("No such user in the tenant."),
                                        "409": error("It would leave the tenant without an admin."), "413": error("Body larger than the limit.")]),
                "delete": op("Remove a user", "Admins. The user's sessions and API tokens end at once; their devices are deleted or reassigned to another user (devices=delete|reassign, reassign_to). Cancels an invitation too.",
                             id: "deleteUser", auth: "admin",
                             parameters: [id,
                                          ["name": "devices", "in": "query", "required": false, "description": "What happens to the user's devices (required when there are any).",
                                           "schema": ["type": "string", "enum": ["delete", "reassign"]]],
                                          ["name": "reassign_to", "in": "query", "required": false, "description": "With devices=reassign: the user who gets them.",
                                           "schema": ["type": "string", "format": "uuid"]]],
                             responses: ["200": ok("What happened to the devices.", "UserRemoval"), "400": error("Bad devices or reassign_to."),
                                         "404": error("No such user in the tenant."), "409": error("Removing yourself.")]),
            ],
            "/api/mesh/tokens": [
                "get": op("List your API tokens", "The caller's personal API tokens (never the tokens), newest first, with their last use.", id: "listTokens",
                          auth: "user", responses: ["200": ok("Tokens.", "APITokenList")]),
                "post": op("Create an API token", "A personal API token for scripts (Authorization: Bearer qmp_...), shown only in this answer; only its SHA-256 is stored. 90 days unless expires_in_days says otherwise (1 to 365); at most 50 live tokens per user.",
                           id: "createToken", auth: "user", body: jsonBody("CreateTokenRequest"),
                           responses: ["201": ["description": "Created. Cache-Control: no-store.", "content": json(ref("CreatedAPIToken")),
                                               "headers": ["Location": ["schema": string]]],
                                       "400": error("Malformed body, bad name or lifetime."), "409": error("Too many live tokens."),
                                       "413": error("Body larger than the limit.")]),
            ],
            "/api/mesh/tokens/{id}": ["delete": op("Revoke an API token", "The caller's own token (admins: any of the tenant's). It fails on its next request.",
                                                   id: "revokeToken", auth: "user", parameters: [uuidPath("id", "Token id")],
                                                   responses: ["204": noContent, "404": error("No such token for this caller.")])],
        ]
    }

    static var accountSchemas: [String: Any] {
        let user = object(["id": string, "name": string, "email": nullableString, "role": ["type": "string", "enum": ["owner", "admin"]],
                           "status": ["type": "string", "enum": ["active", "invited"]],
                           "identity": ["oneOf": [["type": "null"], object(["issuer": string, "subject": string])],
                                        "description": "The provider identity the user signs in with (iss + sub)."],
                           "invited_subject": nullableString, "created_at": dateTime, "last_sign_in_at": nullableDateTime,
                           "invite_expires_at": nullableDateTime])
        let token = ["id": string, "name": string, "prefix": ["type": "string", "description": "qmp_ and the token's first 4 characters."],
                     "created_at": dateTime, "expires_at": dateTime, "last_used_at": nullableDateTime] as [String: Any]
        return [
            "User": user,
            "UserList": object(["users": ["type": "array", "items": ref("User")]]),
            "UserRemoval": object(["devices_deleted": uint, "devices_reassigned": uint]),
            "InviteUserRequest": {
                var o = object(["email": ["type": "string", "format": "email", "maxLength": 254],
                                "subject": ["type": "string", "minLength": 1, "maxLength": 255],
                                "issuer": ["type": "string", "format": "uri", "maxLength": 512], "role": ["type": "string", "enum": ["owner", "admin"]],
                                "name": ["type": "string", "maxLength": 63], "expires_in_days": ["type": "integer", "minimum": 1, "maximum": 90]],
                               required: [])
                // Exactly one of the two names the person.
                o["oneOf"] = [["required": ["email"]], ["required": ["subject"]]]
                return o
            }(),
            "SetRoleRequest": object(["role": ["type": "string", "enum": ["owner", "admin"]]], required: ["role"]),
            "CreateTokenRequest": object(["name": ["type": "string", "minLength": 1, "maxLength": 64],
                                          "expires_in_days": ["type": "integer", "minimum": 1, "maximum": 365]], required: ["name"]),
            "APIToken": object(token),
            "APITokenList": object(["tokens": ["type": "array", "items": ref("APIToken")]]),
            "CreatedAPIToken": object(token.merging(["token": ["type": "string", "description": "qmp_ + 36 characters; shown only here."],
                                                     "notice": string]) { a, _ in a }),
            "SessionInfo": object(["user": ref("User"),
                                   "tenant": object(["id": string, "name": string, "plan": ["type": "string", "enum": ["free", "pro", "team", "enterprise"]]]),
                                   "credential": ["type": "string", "enum": ["session", "api_token", "bearer"]],
                                   "session": ["oneOf": [["type": "null"],
                                                         object(["provider": string, "amr": stringArray, "expires_at": nullableDateTime,
                                                                 "idle_expires_at": nullableDateTime])]]]),
        ]
    }

    static var createDevice: [String: Any] {
        op("Create a device", "Creates a device with a fresh keypair and returns its wg-quick config and a QR code of it. The private key exists only in this response. Rate limited per user (5 per minute by default); the plan's device cap applies. Enterprise tenants that require SAML need a token whose amr includes \"saml\".",
           id: "createDevice", auth: "user",
           body: ["required": true, "content": json(ref("CreateDeviceRequest"))],
           responses: [
               "201": ["description": "Created. Cache-Control: no-store.", "content": json(ref("CreatedDevice")),
                       "headers": ["Location": ["schema": string]]],
               "400": error("Malformed body, unknown field, bad label or type; expires_at not an RFC 3339 time, not in the future, more than 10 years away, or (for owners) beyond the tenant's device lifetime; pair for a type other than iphone or android."),
               "403": error("Node token; device cap of the plan reached (quota_exceeded with plan and cap); SAML session required."),
               "409": error("failed_precondition: the tenant has no node yet (enroll a node first), or its mesh is turned off."),
               "413": error("Body larger than the limit (16 KiB)."),
               "429": ["description": "Too many devices created (rate_limited with retry_after_seconds).",
                       "headers": ["Retry-After": ["schema": ["type": "integer"]]], "content": json(ref("Error"))],
           ])
    }

    static var deleteDevice: [String: Any] {
        op("Delete a device", "Deletes a device. Its owner or an admin of its tenant may; anyone else gets 404.",
           id: "deleteDevice", auth: "user", parameters: [uuidPath("id", "Device id")],
           responses: ["204": noContent, "404": error("No such device for this caller.")])
    }

    static var renameDevice: [String: Any] {
        op("Rename a device, or change its expiry", "With {label}: a new label and so a new slug and DNS name (the old name stops resolving); its owner or an admin of its tenant may. With {expires_at}: a new expiry (RFC 3339, in the future) or null for never; admins only; a device suspended because it expired comes back. One of the two per request. Anyone who may not see the device gets 404.",
           id: "renameDevice", auth: "user", parameters: [uuidPath("id", "Device id")],
           body: ["required": true, "content": json(ref("UpdateDeviceRequest"))],
           responses: ["200": ok("The device after the change.", "Device"),
                       "400": error("Malformed body, bad label, bad or past expires_at, or both members at once."),
                       "403": error("An owner changing an expiry."),
                       "404": error("No such device for this caller."), "413": error("Body larger than the limit (16 KiB).")])
    }

    static func deviceAction(_ summary: String, _ description: String, id: String, conflict: String?) -> [String: Any] {
        var responses: [String: Any] = ["200": ok("The device after the change.", "Device"), "404": error("No such device for this caller.")]
        if let conflict { responses["409"] = error(conflict) }
        return op(summary, description, id: id, auth: "user", parameters: [uuidPath("id", "Device id")], responses: responses)
    }

    static func queryString(_ name: String, _ description: String) -> [String: Any] {
        ["name": name, "in": "query", "required": false, "description": description, "schema": ["type": "string"]]
    }

    static var updateNode: [String: Any] {
        op("Make a node the hub", "Admins only. Body {\"hub\": true}. Configs that route through the old hub are marked outdated; they keep working while it lives.",
           id: "updateNode", auth: "admin", parameters: [uuidPath("id", "Node id")],
           body: ["required": true, "content": json(ref("UpdateNodeRequest"))],
           responses: ["200": ok("The node, now the hub.", "Node"), "400": error("Malformed body."),
                       "404": error("No such node in the caller's tenant."),
                       "413": error("Body larger than the limit (16 KiB).")])
    }

    static var reissueDevice: [String: Any] {
        op("Re-issue a device's config", "A new keypair and a fresh config with the tenant's current nodes and hub. The device keeps its id, addresses, name and creation time; its old key leaves every node, so the old config stops working. Its owner or an admin of its tenant may; anyone else gets 404. Draws on the creation rate limit, not on the plan's cap. The private key exists only in this response.",
           id: "reissueDevice", auth: "user", parameters: [uuidPath("id", "Device id")],
           responses: [
               "200": ["description": "The new config. Cache-Control: no-store.", "content": json(ref("CreatedDevice"))],
               "403": error("Node token; SAML session required."),
               "404": error("No such device for this caller."),
               "409": error("The mesh is off, or the tenant has no node."),
               "429": ["description": "Too many creations and re-issues (rate_limited with retry_after_seconds).",
                       "headers": ["Retry-After": ["schema": ["type": "integer"]]], "content": json(ref("Error"))],
           ])
    }

    // MARK: The document

    static var document: [String: Any] {
        var paths: [String: Any] = [
            "/healthz": ["get": op("Liveness", "200 while the process serves HTTP.", id: "healthz", auth: nil,
                                   responses: ["200": ok("Alive.", "Health")])],
            "/readyz": ["get": op("Readiness", "200 when the bus is connected and ProvisionSvc answers $SRV.PING; 503 otherwise.",
                                  id: "readyz", auth: nil,
                                  responses: ["200": ok("Ready.", "Health"), "503": ok("Not ready.", "Health")])],
            "/metrics": ["get": op("Prometheus metrics", "Prometheus text exposition format.", id: "metrics", auth: nil,
                                   responses: ["200": ["description": "Metrics.", "content": ["text/plain": ["schema": string]]]])],
            "/openapi.json": ["get": op("This document", "The OpenAPI 3.1 description of every route.", id: "openapi", auth: nil,
                                        responses: ["200": ["description": "OpenAPI document.", "content": json(["type": "object"])]])],
            "/api/mesh/ui-config": ["get": op("Web page settings", "Settings the web page reads first (e.g. whether the legacy Pritunl banner shows).",
                                              id: "uiConfig", auth: nil, responses: ["200": ok("Settings.", "UIConfig")])],
            "/api/mesh/state": ["get": op("Mesh state of a node",
                                          "The WireGuard interface and mesh DNS status of this gateway's node (MESH_GATEWAY_NODE_ID). Admins may pass node_id. The node must belong to the caller's tenant.",
                                          id: "meshState", auth: "user",
                                          parameters: [["name": "node_id", "in": "query", "required": false, "description": "Admins only: another node of the tenant.",
                                                        "schema": ["type": "string", "format": "uuid"]]],
                                          responses: ["200": ok("State.", "State"), "400": error("node_id is not a UUID."),
                                                      "404": error("The node is not in the caller's tenant.")])],
            "/api/mesh/devices": [
                "get": op("List devices", "One page, oldest first. Owners see their own devices; admins see the whole tenant. Below Pro the per-peer stats (endpoint, rx_bytes, tx_bytes) are left out (per_peer_stats false).",
                          id: "listDevices", auth: "user",
                          parameters: deviceListParameters,
                          responses: ["200": ok("A page of devices, oldest first.", "DeviceList"),
                                      "400": error("Bad limit, cursor, owner, status or type.")]),
                "post": createDevice,
            ],
            "/api/mesh/devices/{id}": [
                "get": op("One device", "The device's owner or an admin of its tenant; anyone else gets 404.", id: "getDevice", auth: "user",
                          parameters: [uuidPath("id", "Device id")],
                          responses: ["200": ok("The device.", "Device"), "404": error("No such device for this caller.")]),
                "delete": deleteDevice, "patch": renameDevice,
            ],
            "/api/mesh/devices/{id}/suspend": ["post": deviceAction(
                "Suspend a device", "Its owner or an admin. The device leaves every node's interface and the mesh DNS, and keeps its keys, addresses, name and plan slot. Idempotent.",
                id: "suspendDevice", conflict: nil)],
            "/api/mesh/devices/{id}/resume": ["post": deviceAction(
                "Resume a device", "Its owner (unless an admin suspended it: 403) or an admin. Idempotent.",
                id: "resumeDevice", conflict: "failed_precondition: the device's expiry has passed; an admin must extend it first.")],
            "/api/mesh/nodes": ["get": op("List nodes", "Admins only. The tenant's nodes, the hub first; each node is asked for its live state with a bounded wait (online, backend, revision, last_sync_at; null with state_error when it did not answer).",
                                          id: "listNodes", auth: "admin", responses: ["200": ok("Nodes.", "NodeList")])],
            "/api/mesh/nodes/{id}": ["patch": updateNode, "delete": op("Remove a node", "Admins only. The node leaves every interface, its bus identity is revoked before the answer, its address is released, and devices whose configs list it are marked outdated.",
                                                  id: "removeNode", auth: "admin", parameters: [uuidPath("id", "Node id")],
                                                  responses: ["204": noContent, "404": error("No such node in the caller's tenant.")])],
            "/api/mesh/enrollment-tokens": ["post": op("Create a node enrollment token", "Admins only. A NodeApplier registers into the tenant with it (MESH_NODE_ENROLLMENT_TOKEN). Shown once; only its hash is stored.",
                                                       id: "createEnrollmentToken", auth: "admin",
                                                       body: ["required": false, "content": json(ref("EnrollmentTokenRequest"))],
                                                       responses: ["201": ok("The token.", "EnrollmentToken"),
                                                                   "400": error("Bad ttl_seconds or uses.")])],
            "/api/mesh/settings": [
                "get": op("Tenant settings", "The mesh switch and the default device lifetime; any user of the tenant.", id: "getSettings", auth: "user",
                          responses: ["200": ok("Settings.", "TenantSettings")]),
                "patch": op("Change tenant settings", "Admins only. mesh_enabled false takes every device off every node (devices, addresses and names are kept) and refuses new devices; true restores them. device_lifetime_seconds sets the default lifetime of new devices (null or 0: off). Audited.",
                            id: "updateSettings", auth: "admin", body: ["required": true, "content": json(ref("TenantSettingsPatch"))],
                            responses: ["200": ok("Settings after the change.", "TenantSettings"), "400": error("Malformed body or a value out of range."),
                                        "413": error("Body larger than the limit (16 KiB).")]),
            ],
            "/api/mesh/refresh": ["post": op("Force a SyncFromCP on every node", "Admins only. Every node of the tenant re-reads its peer list now. 204 when at least one node was reached (X-Mesh-Nodes-Reached of X-Mesh-Nodes-Total); nodes that fail are logged.",
                                             id: "refresh", auth: "admin",
                                             responses: ["204": ["description": "At least one node was reached.",
                                                                 "headers": ["X-Mesh-Nodes-Reached": ["schema": ["type": "integer"]],
                                                                             "X-Mesh-Nodes-Total": ["schema": ["type": "integer"]]]],
                                                         "409": error("failed_precondition: the tenant has no node."),
                                                         "503": error("No node was reached (or a service did not answer).")])],
            "/api/mesh/events": ["get": op("Live device list (Server-Sent Events)",
                                           "One page of the device list the caller may see (the query of GET /api/mesh/devices), pushed: a `devices` event with that page (and its next_cursor) on connect and after every change of it, a `device` event when a listed device's status changes, a `mesh` event (`{\"revision\": n}`) after every change of the tenant's mesh, a comment line as heartbeat, and an `ended` event (`{\"status\", \"error\"}`) when the credential is refused at a later read. The stream ends after the gateway's live lifetime (300 s by default); reconnect at once. See docs/api.md, \"Live updates\".",
                                           id: "liveEvents", auth: "user", parameters: deviceListParameters,
                                           responses: ["200": ["description": "An event stream (text/event-stream) that lasts until the live lifetime ends.",
                                                               "content": ["text/event-stream": ["schema": ["type": "string"]]]]])],
            "/api/mesh/devices/{id}/reissue": ["post": reissueDevice],
            "/cp/api/v1/mesh/devices/{id}/reissue": ["post": reissueDevice.merging(["operationId": "cpReissueDevice"]) { _, b in b }],
            "/api/mesh/peers": ["get": op("Live peer dump of a node",
                                          "Admins only. Free plans get basic state (keys, allowed IPs, peer ids and names); Pro and above also get per-peer stats (endpoint, last handshake, rx, tx).",
                                          id: "peers", auth: "admin",
                                          parameters: [["name": "node_id", "in": "query", "required": false, "description": "Another node of the tenant.",
                                                        "schema": ["type": "string", "format": "uuid"]]],
                                          responses: ["200": ok("Peers.", "PeerDump"), "400": error("node_id is not a UUID."),
                                                      "404": error("The node is not in the caller's tenant.")])],
            "/api/mesh/audit": ["get": op("Audit log", "Admins of Team and Enterprise tenants. Newest first; page with before=next_before.",
                                          id: "audit", auth: "admin",
                                          parameters: [
                                              ["name": "before", "in": "query", "required": false, "description": "Entries with an id below this.",
                                               "schema": ["type": "integer", "minimum": 0, "maximum": Int64.max]],
                                              ["name": "limit", "in": "query", "required": false, "description": "Page size (default 50).",
                                               "schema": ["type": "integer", "minimum": 1, "maximum": 500]],
                                              queryString("action", "An action (device.suspend), or a family without a dot (device: every device.* action)."),
                                              queryString("actor", "An actor exactly: user:<id>, node:<id> or system."),
                                          ],
                                          responses: ["200": ok("A page.", "AuditPage"), "400": error("Bad before, limit, action or actor."),
                                                      "403": error("Not an admin, or the plan has no audit log.")])],
            "/api/mesh/audit/export": ["get": op("Export the audit log", "Admins of Team and Enterprise tenants. Every entry that passes the filters, newest first, streamed: CSV (RFC 4180, with a header line) or JSON lines.",
                                                 id: "exportAudit", auth: "admin",
                                                 parameters: [
                                                     ["name": "format", "in": "query", "required": false, "description": "csv (default) or jsonl.",
                                                      "schema": ["type": "string", "enum": ["csv", "jsonl"]]],
                                                     queryString("action", "As for the audit log."),
                                                     queryString("actor", "As for the audit log."),
                                                 ],
                                                 responses: ["200": ["description": "The log, as an attachment.",
                                                                     "content": ["text/csv": ["schema": string], "application/x-ndjson": ["schema": string]]],
                                                             "400": error("Bad format, action or actor."),
                                                             "403": error("Not an admin, or the plan has no audit log.")])],
            "/api/license/orbit-features": ["get": op("License features", "The mesh_vpn feature of the caller's tenant.", id: "orbitFeatures",
                                                      auth: "user", responses: ["200": ok("Features.", "OrbitFeatures")])],
            "/cp/api/v1/mesh/devices": ["post": {
                var o = createDevice
                o["operationId"] = "cpCreateDevice"
                o["summary"] = "Create a device (CP authority)"
                return o
            }()],
            "/cp/api/v1/mesh/devices/{id}": ["delete": {
                var o = deleteDevice
                o["operationId"] = "cpDeleteDevice"
                o["summary"] = "Delete a device (CP authority)"
                return o
            }()],
            "/cp/api/v1/mesh/peers/{node_id}": ["get": op("A node's peer list",
                                                          "SyncFromCP for a node: its own entry and every other peer of its tenant at the current revision. Needs the node's own CC-agent token; any other node id is 404.",
                                                          id: "nodePeers", auth: "node", parameters: [uuidPath("node_id", "The calling node's id")],
                                                          responses: ["200": ok("Peer list.", "Sync"), "404": error("Not this node's id, or the node is unknown.")])],
        ]

        paths.merge(accountPaths) { a, _ in a }
        paths.merge(migrationPaths) { a, _ in a }
        let peer = object(["id": string, "kind": ["type": "string", "enum": ["device", "node"]], "public_key": string,
                           "mesh_ips": stringArray, "allowed_ips": stringArray, "dns_name": string, "endpoint": nullableString,
                           "persistent_keepalive": uint, "hub": bool])
        let schemas: [String: Any] = [
            "Error": object(["error": object([
                "code": ["type": "string", "enum": ["invalid_argument", "not_found", "already_exists", "conflict", "permission_denied", "unauthenticated",
                                                    "quota_exceeded", "rate_limited", "pool_exhausted", "failed_precondition", "gone", "unavailable",
                                                    "deadline_exceeded", "internal", "payload_too_large", "method_not_allowed"]],
                "message": string, "request_id": string,
                "field": ["type": "string", "description": "invalid_argument: the field at fault."],
                "plan": ["type": "string", "description": "quota_exceeded: the tenant's plan."],
                "cap": ["type": "integer", "description": "quota_exceeded: the plan's device cap."],
                "retry_after_seconds": ["type": "integer", "description": "rate_limited: seconds until a creation is allowed again."],
                "reason": ["type": "string", "description": "A refused sign-in: why (e.g. id_token_signature, state_replayed, not_invited)."],
            ], required: ["code", "message", "request_id"])]),
            "Health": object(["status": string, "checks": ["type": "object", "additionalProperties": ["type": "string"]]]),
            "UIConfig": object(["pritunl_configured": bool, "mesh_domain": string, "device_types": stringArray,
                                "sign_in": object(["providers": ["type": "array", "items": object(["id": string, "name": string, "login_url": string])],
                                                   "token": bool])]),
            "DeviceType": ["type": "string", "enum": ["iphone", "android", "laptop", "other"]],
            "Device": object(["id": string, "label": string, "slug": string, "dns_name": string, "type": ref("DeviceType"),
                              "mesh_ips": ["type": "array", "items": string, "description": "IPv4 then IPv6."],
                              "created_at": dateTime, "last_handshake_at": nullableDateTime, "online": bool,
                              "rx_bytes": ["type": "integer", "minimum": 0, "description": "Pro and above (per-peer stats)."],
                              "tx_bytes": ["type": "integer", "minimum": 0, "description": "Pro and above (per-peer stats)."],
                              "endpoint": ["type": ["string", "null"], "description": "Pro and above (per-peer stats)."],
                              "owner_user_id": string, "owner_name": string, "status": ref("DeviceStatus"),
                              "suspend_reason": ["type": ["string", "null"], "enum": ["user", "admin", "expired", NSNull()]],
                              "suspended_at": nullableDateTime, "expires_at": nullableDateTime,
                              "config_outdated": ["type": "boolean", "description": "The mesh changed in a way the device's static config cannot follow; re-issue it."],
                              "config_outdated_reason": nullableString,
                              "tags": ["type": "array", "items": string, "description": "Admin-assigned tags (access policies)."]],
                             required: ["id", "label", "slug", "dns_name", "type", "mesh_ips", "created_at", "last_handshake_at", "online",
                                        "owner_user_id", "owner_name", "status", "suspend_reason", "suspended_at", "expires_at",
                                        "config_outdated", "config_outdated_reason"]),
            "DeviceStatus": ["type": "string", "enum": ["active", "suspended", "expired"]],
            "DeviceList": object(["devices": ["type": "array", "items": ref("Device")], "next_cursor": nullableString,
                                  "per_peer_stats": ["type": "boolean", "description": "Whether the devices carry endpoint, rx_bytes and tx_bytes."]]),
            "UpdateDeviceRequest": ["oneOf": [
                object(["label": ["type": "string", "minLength": 1, "maxLength": 63, "description": "The new label, shown as typed."]], required: ["label"]),
                object(["expires_at": ["type": ["string", "null"], "format": "date-time", "description": "RFC 3339, in the future; null: never."]],
                       required: ["expires_at"]),
            ]],
            "UpdateNodeRequest": object(["hub": ["type": "boolean", "const": true, "description": "Make this node the tenant's hub."]], required: ["hub"]),
            "CreateDeviceRequest": object(["label": ["type": "string", "minLength": 1, "maxLength": 63, "description": "Shown as typed; its slug names the device in DNS."],
                                           "type": ref("DeviceType"),
                                           "expires_at": ["type": ["string", "null"], "format": "date-time",
                                                          "description": "RFC 3339, in the future (default: the tenant's device lifetime, if set)."],
                                           "pair": ["type": "boolean", "description": "A phone's pairing (type iphone or android): the reply adds the fallback (docs/fallback.md)."]],
                                          required: ["label"]),
            "CreatedDevice": object(["id": string, "label": string, "slug": string, "dns_name": string, "type": ref("DeviceType"),
                                     "mesh_ips": stringArray, "created_at": dateTime, "status": ref("DeviceStatus"), "expires_at": nullableDateTime,
                                     "config": ["type": "string", "description": "wg-quick config holding the device's only copy of its private key."],
                                     "qr_svg": ["type": "string", "description": "SVG QR code of config; empty when the config is too large."],
                                     "qr_unavailable_reason": ["type": ["string", "null"], "description": "Why there is no QR code (null when there is one)."],
                                     "private_key_notice": string,
                                     "fallback": ref("PhoneFallback")],
                                    required: ["id", "label", "slug", "dns_name", "type", "mesh_ips", "created_at", "status", "expires_at", "config", "qr_svg",
                                               "qr_unavailable_reason", "private_key_notice"]),
            "PhoneFallback": object(["urls": ["type": "array", "items": ["type": "string", "format": "uri"],
                                              "description": "https://<node>.<mesh domain>:8443 of each node, the hub first."],
                                     "nodes": ["type": "array", "items": ref("FallbackNode")],
                                     "ca_certificate_pem": ["type": "string", "description": "The tenant CA (PEM): the only root to trust for these URLs."]]),
            "FallbackNode": object(["node_id": string, "dns_name": string, "url": string, "mesh_ips": stringArray]),
            "Node": object(["id": string, "name": string, "slug": string, "dns_name": string, "mesh_ips": stringArray, "endpoint": string,
                            "listen_port": uint, "public_key": string, "hub": bool, "tags": stringArray, "created_at": dateTime, "last_seen_at": nullableDateTime,
                            "online": ["type": ["boolean", "null"], "description": "null when the node was not asked (PATCH)."],
                            "backend": nullableString, "revision": ["type": ["integer", "null"], "minimum": 0],
                            "last_sync_at": nullableDateTime, "state_error": nullableString]),
            "NodeList": object(["nodes": ["type": "array", "items": ref("Node")]]),
            "EnrollmentTokenRequest": object(["ttl_seconds": ["type": "integer", "minimum": 60, "maximum": 2_592_000, "description": "Default 3600."],
                                              "uses": ["type": "integer", "minimum": 1, "maximum": 10_000, "description": "Default 1."]], required: []),
            "EnrollmentToken": object(["token": string, "expires_at": dateTime, "uses": uint]),
            "TenantSettings": object(["mesh_enabled": bool, "device_lifetime_seconds": ["type": ["integer", "null"], "minimum": 3600]]),
            "TenantSettingsPatch": object(["mesh_enabled": bool,
                                           "device_lifetime_seconds": ["type": ["integer", "null"], "minimum": 0, "maximum": 315_360_000,
                                                                       "description": "null or 0: off; else 3600 (1 hour) to 315360000 (10 years)."]],
                                          required: []),
            "DNSStatus": object(["serving": bool, "zone": string, "record_count": uint, "last_update": nullableDateTime, "listen": stringArray]),
            "State": object(["active": bool, "listen_port": uint, "peer_count": uint, "mesh_ip": string, "mesh_ipv6": string,
                             "dns_status": ref("DNSStatus"), "node_id": string, "interface_name": string,
                             "backend": ["type": "string", "description": "kernel or userspace"], "revision": uint, "last_sync_at": nullableDateTime]),
            "PeerStats": object(["public_key": string, "allowed_ips": stringArray, "peer_id": nullableString, "dns_name": nullableString,
                                 "persistent_keepalive": uint, "endpoint": nullableString, "last_handshake_at": nullableDateTime,
                                 "rx_bytes": uint, "tx_bytes": uint],
                                required: ["public_key", "allowed_ips", "peer_id", "dns_name", "persistent_keepalive"]),
            "PeerDump": object(["node_id": string, "diagnostics": ["type": "string", "enum": ["basic_state", "per_peer_stats"]],
                                "read_at": nullableDateTime, "peers": ["type": "array", "items": ref("PeerStats")]]),
            "MeshPeer": peer,
            "Sync": object(["tenant_id": string, "node_id": string, "revision": uint, "self": ref("MeshPeer"),
                            "peers": ["type": "array", "items": ref("MeshPeer")], "ipv4_prefix": string, "ipv6_prefix": string]),
            "MeshVPNFeature": object(["enabled": bool, "plan": ["type": "string", "enum": ["free", "pro", "team", "enterprise"]],
                                      "cap": ["type": ["integer", "null"], "description": "null when unlimited"], "used": uint,
                                      "diagnostics": ["type": "string", "enum": ["basic_state", "per_peer_stats", "audit_log", "saml_gated"]],
                                      "require_saml": bool]),
            "OrbitFeatures": object(["mesh_vpn": ref("MeshVPNFeature")]),
            "AuditEntry": object(["id": ["type": "integer"], "actor": string, "action": string, "target_id": string, "request_id": string,
                                  "at": dateTime, "detail": string]),
            "AuditPage": object(["entries": ["type": "array", "items": ref("AuditEntry")], "next_before": ["type": ["integer", "null"]]]),
        ]
        let allSchemas = schemas.merging(accountSchemas) { a, _ in a }.merging(migrationSchemas) { a, _ in a }.merging(policySchemas) { a, _ in a }
        return [
            "openapi": "3.1.0",
            "info": [
                "title": "Quazzar Mesh Gateway",
                "version": MeshVersion.current,
                "description": "The HTTP API of the Quazzar Mesh control plane: devices, mesh state, diagnostics, license, and the CP authority routes nodes use. Every error is {\"error\": {\"code\", \"message\", \"request_id\"}}. docs/api.md has the details.",
            ],
            "paths": paths.merging(policyPaths) { a, _ in a },
            "components": [
                "schemas": allSchemas,
                "securitySchemes": [
                    "bearer": ["type": "http", "scheme": "bearer",
                               "description": "A signed JWT (HS256 or EdDSA; users: sub (user id), tenant, role (owner|admin), exp, optional amr; nodes: sub node:<id>, tenant, exp) or a personal API token (qmp_...)."],
                    "session": ["type": "apiKey", "in": "cookie", "name": "__Host-qm_session",
                                "description": "The browser session after a sign-in (qm_session over plain HTTP to a non-loopback host). State-changing requests need this site's Origin."],
                ],
            ],
        ]
    }
}
