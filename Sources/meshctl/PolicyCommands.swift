import ArgumentParser
import Foundation
import MeshClient
import MeshDomain
import MeshProto

// MARK: Access policies

struct Policy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Access policies: who may reach what in a tenant (docs/policies.md).",
        discussion: """
            Selectors: *, user:<id>, role:owner|admin, type:iphone|android|laptop|other, tag:<tag>, device:<id>, node:<id>. \
            Ports: tcp, udp, icmp, tcp:22, udp:8000-8100 (none: all traffic). No rule: everything is allowed; once any \
            rule exists, what no rule allows is refused. Rules are directional: replies pass, the other direction needs a rule.
            """,
        subcommands: [Show.self, Add.self, Update.self, Remove.self, Apply.self, Check.self, DNSFilter.self, Tag.self])

    static func json(_ r: Mesh_V1_PolicyRule) -> [String: Any] {
        ["id": r.id, "name": r.name, "sources": r.sources.map(PolicyText.text), "destinations": r.destinations.map(PolicyText.text),
         "ports": r.ports.map(PolicyText.text)]
    }

    static func json(_ p: Mesh_V1_Policy) -> [String: Any] {
        let cap: Any = p.rulesUnlimited ? NSNull() : Int(p.ruleCap)
        return ["version": p.version, "dns_filtered": p.dnsFiltered, "rule_cap": cap, "rules": p.rules.map(json)]
    }

    static func line(_ r: Mesh_V1_PolicyRule) -> String {
        let ports = r.ports.isEmpty ? "all traffic" : r.ports.map(PolicyText.text).joined(separator: ",")
        return "\(r.id)  \(r.sources.map(PolicyText.text).joined(separator: ",")) -> \(r.destinations.map(PolicyText.text).joined(separator: ","))  \(ports)  \(r.name)"
    }

    static func text(_ p: Mesh_V1_Policy) -> String {
        let header = "version \(p.version), \(p.rules.count)\(p.rulesUnlimited ? "" : " of \(p.ruleCap)") rules, DNS filter \(p.dnsFiltered ? "on" : "off")"
        return ([header] + p.rules.map(line)).joined(separator: "\n")
    }

    /// A rule from the command line, in the text forms.
    static func rule(name: String, from: [String], to: [String], ports: [String]) throws -> Mesh_V1_PolicyRule {
        do {
            var r = Mesh_V1_PolicyRule()
            r.name = name
            r.sources = try from.enumerated().map { i, s throws(MeshError) in try PolicyText.selector(s, field: "--from[\(i)]") }
            r.destinations = try to.enumerated().map { i, s throws(MeshError) in try PolicyText.selector(s, field: "--to[\(i)]") }
            r.ports = try ports.enumerated().map { i, s throws(MeshError) in try PolicyText.port(s, field: "--port[\(i)]") }
            return r
        } catch {
            throw ValidationError(error.message)
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show the tenant's rules, in order.")
        @OptionGroup var options: CtlOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "An admin user of the tenant.") var admin: String

        func run() async throws {
            let p = try await options.withProvision { client in try await client.policy(caller: try await caller(client, tenant: tenant, user: admin)) }
            try options.emit(Policy.json(p), text: Policy.text(p))
        }
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add a rule at the end; prints its id.")
        @OptionGroup var options: CtlOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "An admin user of the tenant.") var admin: String
        @Option(help: "What the rule is for.") var name: String
        @Option(help: "A source selector (repeatable).") var from: [String]
        @Option(help: "A destination selector (repeatable).") var to: [String]
        @Option(help: "A protocol and port (repeatable; none: all traffic).") var port: [String] = []

        func run() async throws {
            let rule = try Policy.rule(name: name, from: from, to: to, ports: port)
            let r = try await options.withProvision { client in
                try await client.updatePolicy(caller: try await caller(client, tenant: tenant, user: admin), .add(rule))
            }
            try options.emit(Policy.json(r.rule), text: r.rule.id)
        }
    }

    struct Update: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Replace one rule.")
        @OptionGroup var options: CtlOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "An admin user of the tenant.") var admin: String
        @Option(help: "The rule's id.") var rule: String
        @Option(help: "What the rule is for.") var name: String
        @Option(help: "A source selector (repeatable).") var from: [String]
        @Option(help: "A destination selector (repeatable).") var to: [String]
        @Option(help: "A protocol and port (repeatable; none: all traffic).") var port: [String] = []

        func run() async throws {
            var new = try Policy.rule(name: name, from: from, to: to, ports: port)
            new.id = rule
            let r = try await options.withProvision { client in
                try await client.updatePolicy(caller: try await caller(client, tenant: tenant, user: admin), .update(new))
            }
            try options.emit(Policy.json(r.policy), text: Policy.text(r.policy))
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a rule.")
        @OptionGroup var options: CtlOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "An admin user of the tenant.") var admin: String
        @Option(help: "The rule's id.") var rule: String

        func run() async throws {
            let r = try await options.withProvision { client in
                try await client.updatePolicy(caller: try await caller(client, tenant: tenant, user: admin), .deleteRuleID(rule))
            }
            try options.emit(Policy.json(r.policy), text: Policy.text(r.policy))
        }
    }

    struct Apply: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Replace every rule with those of a JSON file.",
            discussion: """
                The file holds {"rules": [{"id"?, "name", "sources": [...], "destinations": [...], "ports"?: [...]}, ...]} \
                (what `policy show --json` prints is accepted too). Rules keep the ids they name; the others get new ones.
                """)
        @OptionGroup var options: CtlOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "An admin user of the tenant.") var admin: String
        @Option(help: "The JSON file (- for standard input).") var file: String

        func run() async throws {
            let data = file == "-" ? FileHandle.standardInput.readDataToEndOfFile() : try Data(contentsOf: URL(fileURLWithPath: file))
            var rules = Mesh_V1_PolicyRules()
            do {
                guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let list = object["rules"] as? [Any] else {
                    throw MeshError.invalidArgument(field: "rules", message: "\(file) must hold a JSON object with a \"rules\" array")
                }
                for (i, item) in list.enumerated() {
                    // `policy show --json` output may be applied back: drop its read-only members.
                    var rule = item
                    if var o = item as? [String: Any] { o.removeValue(forKey: "version"); rule = o }
                    rules.rules.append(try PolicyText.rule(json: rule, path: "rules[\(i)].", allowID: true))
                }
            } catch let e as MeshError {
                throw CtlError(message: "\(e.code): \(e.message)")
            }
            let r = try await options.withProvision { client in
                try await client.updatePolicy(caller: try await caller(client, tenant: tenant, user: admin), .replace(rules))
            }
            try options.emit(Policy.json(r.policy), text: Policy.text(r.policy))
        }
    }

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Dry run: may one member reach another on a protocol and port, and by which rule?",
            discussion: "--from and --to take device:<id>, node:<id>, a mesh address or a DNS name. Exit status 0 when allowed, 2 when refused.")
        @OptionGroup var options: CtlOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "An admin user of the tenant.") var admin: String
        @Option(help: "The member traffic comes from.") var from: String
        @Option(help: "The member it goes to.") var to: String
        @Option(help: "tcp, udp or icmp.") var `protocol`: String = "tcp"
        @Option(help: "Destination port (tcp and udp).") var port: UInt32 = 0

        func run() async throws {
            guard let proto = Mesh_V1_PolicyProtocol(key: `protocol`) else { throw ValidationError("--protocol must be tcp, udp or icmp") }
            let r = try await options.withProvision { client in
                try await client.checkPolicy(caller: try await caller(client, tenant: tenant, user: admin), from: from, to: to, proto: proto, port: port)
            }
            try options.emit(["allowed": r.allowed, "rule_id": r.ruleID.isEmpty ? NSNull() : r.ruleID as Any, "rule_name": r.ruleName,
                              "reason": r.reason, "from": r.fromMember, "to": r.toMember],
                             text: "\(r.allowed ? "allowed" : "refused"): \(r.reason)")
            if !r.allowed { throw ExitCode(2) }
        }
    }

    struct DNSFilter: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "dns-filter",
                                                        abstract: "on: the mesh DNS answers a device only with the names it may reach; off: every name.")
        @OptionGroup var options: CtlOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "An admin user of the tenant.") var admin: String
        @Argument(help: "on or off.") var state: String

        func validate() throws {
            guard ["on", "off"].contains(state) else { throw ValidationError("the state must be on or off") }
        }

        func run() async throws {
            let r = try await options.withProvision { client in
                try await client.updatePolicy(caller: try await caller(client, tenant: tenant, user: admin), .dnsFiltered(state == "on"))
            }
            try options.emit(Policy.json(r.policy), text: "DNS filter \(r.policy.dnsFiltered ? "on" : "off")")
        }
    }

    struct Tag: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Give a device or a node its tags (replacing the old ones; none: no tags).")
        @OptionGroup var options: CtlOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "An admin user of the tenant.") var admin: String
        @Option(help: "The device's id.") var device: String?
        @Option(help: "The node's id.") var node: String?
        @Option(help: "A tag (repeatable).") var tag: [String] = []

        func validate() throws {
            guard (device == nil) != (node == nil) else { throw ValidationError("name exactly one of --device and --node") }
        }

        func run() async throws {
            let kind: Mesh_V1_PeerKind = device != nil ? .device : .node
            let r = try await options.withProvision { client in
                try await client.setTags(caller: try await caller(client, tenant: tenant, user: admin), kind: kind, memberID: device ?? node ?? "", tags: tag)
            }
            try options.emit(["tags": r.tags, "revision": r.revision], text: r.tags.joined(separator: " "))
        }
    }
}
