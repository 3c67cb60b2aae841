import Foundation
import Hummingbird
import MeshDomain
import MeshNet
import MeshProto

// Access policies over HTTP (docs/policies.md, docs/api.md "Access policies"). The gateway turns
// the text forms into the protobuf rules and back; ProvisionSvc validates and decides everything.

extension GatewayAPI {
    /// The access-policy routes (``OpenAPIDocument`` documents them with the rest).
    func addPolicyRoutes(to router: Router<GatewayRequestContext>) {
        router.get("/api/mesh/policies", use: getPolicy)
        router.put("/api/mesh/policies", use: replacePolicy)
        router.patch("/api/mesh/policies", use: patchPolicy)
        router.post("/api/mesh/policies/rules", use: addRule)
        router.put("/api/mesh/policies/rules/:id", use: updateRule)
        router.delete("/api/mesh/policies/rules/:id", use: deleteRule)
        router.post("/api/mesh/policies/check", use: checkPolicy)
        router.put("/api/mesh/devices/:id/tags", use: setTags(kind: .device))
        router.put("/api/mesh/nodes/:id/tags", use: setTags(kind: .node))
    }

    /// `GET /api/mesh/policies`: the tenant's rules, version and DNS filter (admins).
    func getPolicy(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let caller = try await admin(request, context)
        return JSONBody.response(PolicyJSON(try await provision.policy(caller: caller)))
    }

    /// `PUT /api/mesh/policies` `{"rules": [...]}`: replaces every rule at once (admins).
    func replacePolicy(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let caller = try await admin(request, context)
        let object = try JSONBody.object(try await readBody(request), allowed: ["rules"])
        guard let list = object["rules"] as? [Any] else { throw MeshError.invalidArgument(field: "rules", message: "rules must be an array of rules") }
        var rules = Mesh_V1_PolicyRules()
        for (i, item) in list.enumerated() {
            rules.rules.append(try PolicyText.rule(json: item, path: "rules[\(i)].", allowID: true))
        }
        let r = try await provision.updatePolicy(caller: caller, .replace(rules))
        return JSONBody.response(PolicyJSON(r.policy))
    }

    /// `PATCH /api/mesh/policies` `{"dns_filtered": bool}` (admins).
    func patchPolicy(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let caller = try await admin(request, context)
        let object = try JSONBody.object(try await readBody(request), allowed: ["dns_filtered"])
        guard let raw = object["dns_filtered"], RuleJSON.isBool(raw), let on = raw as? Bool else {
            throw MeshError.invalidArgument(field: "dns_filtered", message: "dns_filtered must be true or false")
        }
        let r = try await provision.updatePolicy(caller: caller, .dnsFiltered(on))
        return JSONBody.response(PolicyJSON(r.policy))
    }

    /// `POST /api/mesh/policies/rules`: adds a rule at the end (admins); 201 with the rule.
    func addRule(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let caller = try await admin(request, context)
        let rule = try PolicyText.rule(json: try JSONBody.object(try await readBody(request), allowed: PolicyText.ruleFields), path: "", allowID: false)
        let r = try await provision.updatePolicy(caller: caller, .add(rule))
        return JSONBody.response(RuleJSON(r.rule), status: .created, headers: [.location: "/api/mesh/policies/rules/\(r.rule.id)"])
    }

    /// `PUT /api/mesh/policies/rules/:id`: replaces one rule (admins).
    func updateRule(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let caller = try await admin(request, context)
        guard let id = UUID(text: context.parameters.get("id") ?? "") else { throw MeshError.notFound("no such rule") }
        var rule = try PolicyText.rule(json: try JSONBody.object(try await readBody(request), allowed: PolicyText.ruleFields), path: "", allowID: false)
        rule.id = id.lowercasedText
        let r = try await provision.updatePolicy(caller: caller, .update(rule))
        return JSONBody.response(RuleJSON(r.rule.id.isEmpty ? rule : r.rule))
    }

    /// `DELETE /api/mesh/policies/rules/:id` (admins).
    func deleteRule(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let caller = try await admin(request, context)
        guard let id = UUID(text: context.parameters.get("id") ?? "") else { throw MeshError.notFound("no such rule") }
        _ = try await provision.updatePolicy(caller: caller, .deleteRuleID(id.lowercasedText))
        return Response(status: .noContent)
    }

    /// `POST /api/mesh/policies/check` `{from, to, protocol, port}`: a dry run (admins).
    func checkPolicy(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let caller = try await admin(request, context)
        let object = try JSONBody.object(try await readBody(request), allowed: ["from", "to", "protocol", "port"])
        guard let from = try JSONBody.string(object, "from") else { throw MeshError.invalidArgument(field: "from", message: "from is required") }
        guard let to = try JSONBody.string(object, "to") else { throw MeshError.invalidArgument(field: "to", message: "to is required") }
        guard let p = try JSONBody.string(object, "protocol"), let proto = Mesh_V1_PolicyProtocol(key: p) else {
            throw MeshError.invalidArgument(field: "protocol", message: "protocol must be tcp, udp or icmp")
        }
        var port: UInt32 = 0
        if let raw = object["port"], !(raw is NSNull) {
            guard !RuleJSON.isBool(raw), let n = raw as? Int, (0...65535).contains(n) else {
                throw MeshError.invalidArgument(field: "port", message: "port must be an integer from 0 to 65535")
            }
            port = UInt32(n)
        }
        let r = try await provision.checkPolicy(caller: caller, from: from, to: to, proto: proto, port: port)
        return JSONBody.response(CheckJSON(r))
    }

    /// `PUT /api/mesh/devices/:id/tags` and `PUT /api/mesh/nodes/:id/tags` `{"tags": [...]}` (admins).
    func setTags(kind: Mesh_V1_PeerKind) -> @Sendable (Request, GatewayRequestContext) async throws -> Response {
        { request, context in
            let caller = try await admin(request, context)
            guard let id = UUID(text: context.parameters.get("id") ?? "") else { throw MeshError.notFound("no such \(kind.key)") }
            let object = try JSONBody.object(try await readBody(request), allowed: ["tags"])
            guard object["tags"] is [Any] else { throw MeshError.invalidArgument(field: "tags", message: "tags is required: a list of tags (an empty list removes them all)") }
            let tags = try PolicyText.strings(object["tags"], field: "tags")
            let r = try await provision.setTags(caller: caller, kind: kind, memberID: id.lowercasedText, tags: tags)
            return JSONBody.response(TagsJSON(tags: r.tags))
        }
    }
}

/// A rule as the API writes and reads it: `{"id", "name", "sources": ["tag:web", …], "destinations": […], "ports": ["tcp:22", …]}`.
public struct RuleJSON: JSONEncodable {
    var rule: Mesh_V1_PolicyRule

    /// From the protobuf form.
    public init(_ r: Mesh_V1_PolicyRule) { rule = r }

    /// Writes the JSON form.
    public func encode(to w: inout JSONWriter) {
        let r = rule
        w.object { w in
            w.key("id"); w.string(r.id)
            w.key("name"); w.string(r.name)
            w.key("sources"); w.array(r.sources.map(PolicyText.text))
            w.key("destinations"); w.array(r.destinations.map(PolicyText.text))
            w.key("ports"); w.array(r.ports.map(PolicyText.text))
        }
    }

    /// Whether a parsed JSON value is `true` or `false` (Foundation hands booleans and numbers out as
    /// NSNumber; a boolean's type code is "c").
    static func isBool(_ v: Any) -> Bool {
        (v as? NSNumber).map { String(cString: $0.objCType) == "c" } ?? false
    }

}

/// `GET /api/mesh/policies`.
public struct PolicyJSON: JSONEncodable {
    var policy: Mesh_V1_Policy

    /// From the protobuf form.
    public init(_ p: Mesh_V1_Policy) { policy = p }

    /// Writes the JSON form.
    public func encode(to w: inout JSONWriter) {
        let p = policy
        w.object { w in
            w.key("version"); w.uint(p.version)
            w.key("dns_filtered"); w.bool(p.dnsFiltered)
            w.key("rule_cap")
            if p.rulesUnlimited { w.null() } else { w.uint(UInt64(p.ruleCap)) }
            w.key("rules"); w.array(p.rules.map(RuleJSON.init))
        }
    }
}

/// `POST /api/mesh/policies/check`.
public struct CheckJSON: JSONEncodable {
    var check: Mesh_V1_CheckPolicyResponse

    /// From the protobuf form.
    public init(_ c: Mesh_V1_CheckPolicyResponse) { check = c }

    /// Writes the JSON form.
    public func encode(to w: inout JSONWriter) {
        let c = check
        w.object { w in
            w.key("allowed"); w.bool(c.allowed)
            w.key("rule_id"); w.string(c.ruleID.nilIfEmpty)
            w.key("rule_name"); w.string(c.ruleName.nilIfEmpty)
            w.key("reason"); w.string(c.reason)
            w.key("from"); w.string(c.fromMember)
            w.key("to"); w.string(c.toMember)
        }
    }
}

/// `PUT /api/mesh/devices/:id/tags`, `PUT /api/mesh/nodes/:id/tags`.
public struct TagsJSON: JSONEncodable {
    var tags: [String]

    /// Writes the JSON form.
    public func encode(to w: inout JSONWriter) {
        w.object { w in
            w.key("tags"); w.array(tags)
        }
    }
}
