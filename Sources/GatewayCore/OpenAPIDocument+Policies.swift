import Foundation

extension OpenAPIDocument {
    static var policyPaths: [String: Any] {
        let admin403 = error("Not an admin of the tenant.")
        let body413 = error("Body larger than the limit (16 KiB).")
        let ruleBody: [String: Any] = ["required": true, "content": json(ref("RuleRequest"))]
        let tagsPath: (String, String) -> [String: Any] = { kind, id in
            ["put": op("Tag a \(kind)", "Admins only. Replaces the \(kind)'s tags (at most 16; each 1-63 of a-z, 0-9, '-'). Access-policy rules select members by tag; the change reaches every node.",
                       id: id, auth: "admin", parameters: [uuidPath("id", "The \(kind)'s id")],
                       body: ["required": true, "content": json(ref("TagsRequest"))],
                       responses: ["200": ok("The tags, sorted.", "Tags"), "400": error("Malformed body or tag (field names it)."),
                                   "403": admin403, "404": error("No such \(kind) in the caller's tenant."), "413": body413])]
        }
        return [
            "/api/mesh/policies": [
                "get": op("The tenant's access policy", "Admins only. No rule: everything is allowed; once any rule exists, what no rule allows is refused (docs/policies.md).",
                          id: "getPolicy", auth: "admin", responses: ["200": ok("The policy.", "Policy"), "403": admin403]),
                "put": op("Replace every rule", "Admins only. Validated as a whole: a 400 names the field at fault (e.g. rules[2].sources[0]); ids that name no object of the tenant are refused. Rules without an id get one.",
                          id: "replacePolicy", auth: "admin", body: ["required": true, "content": json(ref("ReplacePolicyRequest"))],
                          responses: ["200": ok("The policy after.", "Policy"), "400": error("Malformed rule (field names it)."),
                                      "403": error("Not an admin; the plan's rule cap (quota_exceeded)."), "413": body413]),
                "patch": op("Turn the DNS filter on or off", "Admins only. With it on, the mesh DNS answers a device only with the names it may reach.",
                            id: "patchPolicy", auth: "admin", body: ["required": true, "content": json(ref("PatchPolicyRequest"))],
                            responses: ["200": ok("The policy after.", "Policy"), "400": error("Malformed body."), "403": admin403, "413": body413]),
            ],
            "/api/mesh/policies/rules": ["post": op("Add a rule", "Admins only. The rule goes at the end; its id is given here.",
                                                    id: "addRule", auth: "admin", body: ruleBody,
                                                    responses: ["201": ["description": "The rule.", "content": json(ref("Rule")),
                                                                        "headers": ["Location": ["schema": string]]],
                                                                "400": error("Malformed rule (field names it)."),
                                                                "403": error("Not an admin; the plan's rule cap (quota_exceeded)."), "413": body413])],
            "/api/mesh/policies/rules/{id}": [
                "put": op("Replace a rule", "Admins only.", id: "updateRule", auth: "admin", parameters: [uuidPath("id", "Rule id")], body: ruleBody,
                          responses: ["200": ok("The rule.", "Rule"), "400": error("Malformed rule (field names it)."), "403": admin403,
                                      "404": error("No such rule."), "413": body413]),
                "delete": op("Delete a rule", "Admins only.", id: "deleteRule", auth: "admin", parameters: [uuidPath("id", "Rule id")],
                             responses: ["204": noContent, "403": admin403, "404": error("No such rule.")]),
            ],
            "/api/mesh/policies/check": ["post": op("Dry run", "Admins only. May `from` reach `to` on this protocol and port under the current rules, and which rule allows it? from and to are device:<id>, node:<id>, a mesh address or a DNS name of the tenant.",
                                                    id: "checkPolicy", auth: "admin", body: ["required": true, "content": json(ref("CheckRequest"))],
                                                    responses: ["200": ok("The verdict.", "Check"), "400": error("Malformed body, or from/to names nothing of the tenant."),
                                                                "403": admin403, "413": body413])],
            "/api/mesh/devices/{id}/tags": tagsPath("device", "setDeviceTags"),
            "/api/mesh/nodes/{id}/tags": tagsPath("node", "setNodeTags"),
        ]
    }

    static var policySchemas: [String: Any] {
        let selectors: [String: Any] = ["type": "array", "items": string, "minItems": 1, "maxItems": 16,
                                        "description": "*, user:<id>, role:owner|admin, type:iphone|android|laptop|other, tag:<tag>, device:<id>, node:<id>"]
        let ports: [String: Any] = ["type": "array", "items": string, "maxItems": 16,
                                    "description": "tcp, udp, icmp, tcp:22, udp:8000-8100; none: all traffic"]
        return [
            "Rule": object(["id": string, "name": string, "sources": selectors, "destinations": selectors, "ports": ports]),
            "RuleRequest": object(["name": ["type": "string", "minLength": 1, "maxLength": 100], "sources": selectors, "destinations": selectors,
                                   "ports": ports], required: ["name", "sources", "destinations"]),
            "ReplaceRule": object(["id": string, "name": ["type": "string", "minLength": 1, "maxLength": 100], "sources": selectors,
                                   "destinations": selectors, "ports": ports], required: ["name", "sources", "destinations"]),
            "ReplacePolicyRequest": object(["rules": ["type": "array", "items": ref("ReplaceRule")]]),
            "PatchPolicyRequest": object(["dns_filtered": bool]),
            "Policy": object(["version": uint, "dns_filtered": bool, "rule_cap": ["type": ["integer", "null"], "description": "null: no cap"],
                              "rules": ["type": "array", "items": ref("Rule")]]),
            "CheckRequest": object(["from": string, "to": string, "protocol": ["type": "string", "enum": ["tcp", "udp", "icmp"]],
                                    "port": ["type": "integer", "minimum": 0, "maximum": 65535]], required: ["from", "to", "protocol"]),
            "Check": object(["allowed": bool, "rule_id": nullableString, "rule_name": nullableString, "reason": string, "from": string, "to": string]),
            "TagsRequest": object(["tags": ["type": "array", "items": string, "maxItems": 16]]),
            "Tags": object(["tags": stringArray]),
        ]
    }
}
