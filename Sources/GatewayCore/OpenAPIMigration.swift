import Foundation

/// The Pritunl walk-through and one-time config links in the OpenAPI document.
extension OpenAPIDocument {
    static var migrationPaths: [String: Any] {
        [
            "/api/mesh/migration": ["get": op(
                "The Pritunl walk-through",
                "Admins only. Whether Pritunl is configured (MESH_PRITUNL_CONFIGURED) or answers the probe (MESH_PRITUNL_URL), and every user of the tenant with their mesh devices, the checklist item \"Pritunl access revoked\" and unused config links. Cache-Control: no-store.",
                id: "migration", auth: "admin", responses: ["200": ok("The walk-through.", "Migration")])],
            "/api/mesh/migration/users/{id}": ["put": op(
                "Set a user's checklist item",
                "Admins only. Body {\"pritunl_revoked\": true|false}; kept in the database and audited (migration.check).",
                id: "setMigrationCheck", auth: "admin", parameters: [uuidPath("id", "User id")],
                body: ["required": true, "content": json(ref("MigrationCheckRequest"))],
                responses: ["200": ok("The user's row of the walk-through.", "MigrationUser"), "400": error("Malformed body."),
                            "404": error("No such user in the caller's tenant.")])],
            "/api/mesh/links": ["post": op(
                "Make a one-time config link",
                "A link that makes a device for user_id (default: the caller) when it is opened; admins for any active user of their tenant, others only for themselves (any other user_id is 404). The token is shown this once (Cache-Control: no-store); only its SHA-256 is kept. The link expires after expires_in seconds (default MESH_CONFIG_LINK_TTL_SECONDS, 3600; 60 to 604800) or its first use. Audited (config_link.create).",
                id: "createConfigLink", auth: "user",
                body: ["required": true, "content": json(ref("CreateConfigLinkRequest"))],
                responses: ["201": ["description": "Created. Cache-Control: no-store.", "content": json(ref("CreatedConfigLink"))],
                            "400": error("Malformed body, label, type or expires_in."), "404": error("No such user.")])],
            "/api/mesh/links/open": ["post": op(
                "Open a one-time config link",
                "No sign-in: the token is the credential. Makes the device (its key is generated now) and returns its config and QR code once. 404 for a token no link has; 410 for a link that was used or has expired. The plan's cap and the rate limit of the link's user apply. Audited (config_link.open, config_link.used, config_link.refused).",
                id: "openConfigLink", auth: nil,
                body: ["required": true, "content": json(ref("OpenConfigLinkRequest"))],
                responses: ["200": ["description": "The device with its config. Cache-Control: no-store.", "content": json(ref("CreatedDevice"))],
                            "400": error("Malformed body."), "403": error("The plan's device cap is reached."),
                            "404": error("No link has this token."), "410": error("The link was used or has expired."),
                            "429": error("The rate limit of the link's user.")])],
        ]
    }

    static var migrationSchemas: [String: Any] {
        let link: [String: Any] = ["id": string, "user_id": string, "label": string, "type": ref("DeviceType"), "created_by": string,
                                   "created_at": dateTime, "expires_at": dateTime, "used_at": nullableDateTime, "device_id": nullableString]
        var created = link
        created["token"] = ["type": "string", "description": "qml_ + 43 characters; shown this once."]
        created["url"] = ["type": "string", "description": "The page that opens the link: /vpn/mesh/link.html#<token>, absolute when MESH_GATEWAY_PUBLIC_URL is set."]
        return [
            "PritunlStatus": object([
                "banner": ["type": "boolean", "description": "Whether the page shows the migration banner: configured, or the probe found Pritunl."],
                "configured": ["type": "boolean", "description": "MESH_PRITUNL_CONFIGURED."],
                "probe": ["type": ["object", "null"], "description": "null without MESH_PRITUNL_URL.",
                          "properties": ["url": string, "detected": ["type": ["boolean", "null"], "description": "null before the first probe."],
                                         "answer": nullableString, "checked_at": nullableDateTime],
                          "required": ["url", "detected", "answer", "checked_at"], "additionalProperties": false],
            ]),
            "ConfigLink": object(link),
            "CreatedConfigLink": object(created),
            "MigrationUser": object(["user": ref("User"), "devices": ["type": "array", "items": ref("Device")], "pritunl_revoked": bool,
                                     "checked_at": nullableDateTime, "checked_by": nullableString,
                                     "pending_links": ["type": "array", "items": ref("ConfigLink")]]),
            "Migration": object(["pritunl": ref("PritunlStatus"), "users": ["type": "array", "items": ref("MigrationUser")]]),
            "MigrationCheckRequest": object(["pritunl_revoked": bool]),
            "CreateConfigLinkRequest": object(["label": ["type": "string", "minLength": 1, "maxLength": 63], "type": ref("DeviceType"),
                                               "user_id": ["type": "string", "format": "uuid"],
                                               "expires_in": ["type": "integer", "minimum": 60, "maximum": 604_800]], required: ["label"]),
            "OpenConfigLinkRequest": object(["token": string]),
        ]
    }
}
