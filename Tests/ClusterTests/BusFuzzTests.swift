import Foundation
import MeshBus
import MeshClient
import MeshDomain
import MeshProto
import MeshTestSupport
import SwiftProtobuf
import Synchronization
import Testing

/// Bad input on the bus, for every request subject of every service.
///
/// The subjects come from the registry (``MeshSubjects/served``), checked against what the running
/// services announce in `$SRV.INFO`: a subject a service serves but the registry lacks fails the
/// test, and a subject added to the registry is fuzzed with no edit here. Each subject gets at
/// least 1,000 messages (`MESH_FUZZ_COUNT`), drawn from a seed printed at the start
/// (`MESH_TEST_SEED` replays it): random bytes, random messages of the endpoint's request type
/// (named in its `$SRV.INFO` metadata), the same grounded in real ids (tenants, users, nodes,
/// devices, an enrollment token) so they get past validation, messages of other types, and
/// mutations of all of these (bit flips, cuts, splices, overlong varints, lying lengths, unknown
/// fields, deep nesting).
///
/// Every request must get an answer: a reply of the endpoint's response type, or a typed error in
/// the ADR-32 headers (`Nats-Service-Error-Code`) with a `mesh.v1.Error` body whose code agrees
/// with the header; never an internal error (500), never silence. Afterwards every process is
/// still running, every service answers `$SRV.PING`, and a valid request still works.
@Suite(.timeLimit(.minutes(20)), .serialized,
       .enabled(if: TestEnvironment.runs(root: true, infra: true, tools: ["wireguard-go", "wg", "ip"]), "needs root, wireguard-go, nats-server and PostgreSQL"))
struct BusFuzzTests {
    init() throws { try TestEnvironment.require(root: true, infra: true, tools: ["wireguard-go", "wg", "ip"]) }

    static let perSubject = Int(ProcessInfo.processInfo.environment["MESH_FUZZ_COUNT"] ?? "") ?? 1000

    @Test func everyRequestSubjectSurvivesBadInput() async throws {
        let lab = try await MeshLab.start("fuzz", plan: .enterprise, environment: ["MESH_RATE_LIMIT": "0", "MESH_LOG_LEVEL": "warning"])
        do {
            try await fuzz(lab)
        } catch {
            try? await lab.stop()
            throw error
        }
        try await lab.stop()
    }

    func fuzz(_ lab: MeshLab) async throws {
        let node = try await lab.addNode("fuzz-node")
        let nodeID = try #require(node.node?.id)
        let bus = lab.cp.bus

        // The registry against what the services announce.
        let announced = try await waitFor("$SRV.INFO from every service and the node", timeout: .seconds(60), interval: .milliseconds(200)) {
            () async throws -> [BusService.InfoResponse]? in
            let info = try await ServiceProcesses.info(bus: bus, service: nil)
            let names = Set(info.map(\.name))
            return Set(MeshSubjects.served.map(\.service)).isSubset(of: names) ? info : nil
        }
        var endpoints: [ServedSubject: BusService.InfoResponse.EndpointInfo] = [:]
        for service in announced {
            for e in service.endpoints {
                let owners = MeshSubjects.served.filter { $0.service == service.name && $0.matches(e.subject) }
                #expect(owners.count == 1, "\(service.name) serves \(e.subject), which MeshSubjects.served does not list")
                if let owner = owners.first { endpoints[owner] = e }
            }
        }
        for s in MeshSubjects.served { #expect(endpoints[s] != nil, "no running service answers \(s)") }

        let seed = TestSeed.seed("BusFuzzTests")
        print("bus fuzz: \(MeshSubjects.served.count) subjects, \(Self.perSubject) messages each, seed \(seed) (replay: MESH_TEST_SEED=\(TestSeed.base))")
        let requestTypes = Set(endpoints.values.compactMap { $0.metadata["request"] }).sorted().compactMap(ProtoTypes.message(named:))
        // MESH_FUZZ_ONLY=<substring> fuzzes only the matching subjects (to replay one).
        let only = ProcessInfo.processInfo.environment["MESH_FUZZ_ONLY"]
        let failuresFile = TestEnvironment.outputDir("bus-fuzz").appendingPathComponent("failures.txt")
        try? FileManager.default.removeItem(at: failuresFile)
        for served in MeshSubjects.served where only.map({ served.subject.contains($0) }) ?? true {
            guard let endpoint = endpoints[served] else { continue }
            let request = try #require(endpoint.metadata["request"].flatMap(ProtoTypes.message(named:)), "\(served): no request type in $SRV.INFO")
            let response = try #require(endpoint.metadata["response"].flatMap(ProtoTypes.message(named:)), "\(served): no response type in $SRV.INFO")
            let subjectSeed = TestSeed.seed("BusFuzzTests.\(served.subject)")
            // Fresh ids for each subject: the fuzzing of one subject may delete what another needs.
            let pool = try await IDPool.make(lab)
            let outcome = try await fuzz(served, request: request, response: response, others: requestTypes, nodeID: nodeID, pool: pool,
                                         seed: subjectSeed, bus: bus)
            print("bus fuzz: \(served.subject): \(outcome.summary) (seed \(subjectSeed))")
            if !outcome.failedInputs.isEmpty {
                // The whole inputs, to replay a failure byte for byte (grounded ones hold this run's ids).
                let text = outcome.failedInputs.map { "\(served.subject)\t\($0.subject)\t\($0.hex)" }.joined(separator: "\n") + "\n"
                let old = (try? String(contentsOf: failuresFile, encoding: .utf8)) ?? ""
                try? (old + text).write(to: failuresFile, atomically: true, encoding: .utf8)
                print("bus fuzz: failing inputs of \(served.subject) in \(failuresFile.path)")
            }
            #expect(outcome.failures.isEmpty, "\(served.subject), \(TestSeed.replay(subjectSeed)): \(outcome.failures.prefix(5))")
            #expect(outcome.sent >= Self.perSubject)
            // Nothing crashed.
            try lab.cp.checkAlive()
            try lab.checkNodesRunning()
        }

        // Every service still answers $SRV.PING and a valid request.
        let pings = Set(try await ServiceProcesses.ping(bus: bus, service: nil, window: .seconds(2)).map(\.name))
        for name in Set(MeshSubjects.served.map(\.service)) { #expect(pings.contains(name), "\(name) no longer answers $SRV.PING") }
        let tenants = try await lab.cp.client.listTenants()
        #expect(tenants.contains { $0.id == lab.tenant.id })
        var usage = Mesh_V1_UsageRequest()
        usage.tenantID = lab.tenant.id
        let _: Mesh_V1_UsageResponse = try await bus.call(MeshSubjects.allocatorUsage, usage, timeout: .seconds(30))
        #expect(try await FanoutClient(bus: bus).revision(tenantID: lab.tenant.id) > 0)
        #expect(try await NodeClient(bus: bus, timeout: .seconds(30)).state(nodeID: nodeID).active)
        let made = try await lab.cp.client.createDevice(caller: lab.admin, label: "after the fuzz", type: .laptop)
        #expect(!made.config.isEmpty)
        try await lab.waitConverged()
    }

    /// The answers of one subject's requests, collected from concurrent tasks.
    final class Answers: Sendable {
        private let list = Mutex<[Answer]>([])
        func add(_ a: Answer) { list.withLock { $0.append(a) } }
        var all: [Answer] { list.withLock { $0 } }
    }

    /// One request's answer: the error code (nil for a good reply), the error text, and a failure
    /// when the answer breaks the rules.
    struct Answer: Sendable {
        var code: Int?
        var text: String = ""
        var failure: String?
        var subject = ""
        var payload: [UInt8] = []
    }

    struct Outcome {
        var sent = 0
        var answered = 0
        var errors: [Int: Int] = [:]
        var texts: [String: Int] = [:]
        var failures: [String] = []
        var failedInputs: [(subject: String, hex: String)] = []
        var summary: String {
            let codes = errors.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ")
            let common = texts.sorted { $0.value > $1.value }.prefix(4).map { "\($0.value)× \($0.key)" }.joined(separator: "; ")
            return "\(sent) sent, \(answered) answered, errors by code \(codes); most common: \(common)"
        }
    }

    /// Sends the subject's messages, 16 at a time, and checks each answer.
    func fuzz(_ served: ServedSubject, request: any SwiftProtobuf.Message.Type, response: any SwiftProtobuf.Message.Type,
              others: [any SwiftProtobuf.Message.Type], nodeID: String, pool: IDPool, seed: UInt64, bus: BusConnection) async throws -> Outcome {
        var generator = FuzzInput(seed: seed, request: request, others: others, pool: pool)
        var outcome = Outcome()
        var inputs: [(subject: String, payload: [UInt8], kind: String)] = []
        for _ in 0..<Self.perSubject { inputs.append(generator.next(for: served, nodeID: nodeID)) }
        outcome.sent = inputs.count
        let results = Answers()
        try await withThrowingTaskGroup(of: Void.self) { group in
            var next = 0
            func add() {
                let input = inputs[next]
                next += 1
                group.addTask {
                    var r = await Self.send(input.subject, input.payload, kind: input.kind, response: response, bus: bus)
                    if r.failure != nil {
                        r.subject = input.subject
                        r.payload = input.payload
                    }
                    results.add(r)
                }
            }
            for _ in 0..<min(16, inputs.count) { add() }
            while try await group.next() != nil {
                if next < inputs.count { add() }
            }
        }
        for a in results.all {
            if let failure = a.failure {
                outcome.failures.append(failure)
                outcome.failedInputs.append((a.subject, a.payload.map { String(format: "%02x", $0) }.joined()))
            }
            if let code = a.code {
                outcome.errors[code, default: 0] += 1
                outcome.texts["\(code) \(a.text.prefix(80))", default: 0] += 1
            } else if a.failure == nil {
                outcome.answered += 1
            }
        }
        return outcome
    }

    /// One request and what its answer says.
    static func send(_ subject: String, _ payload: [UInt8], kind: String, response: any SwiftProtobuf.Message.Type,
                     bus: BusConnection) async -> Answer {
        let input = "\(kind) input \(payload.prefix(48).map { String(format: "%02x", $0) }.joined())\(payload.count > 48 ? "…(\(payload.count) bytes)" : "") on \(subject)"
        do {
            let reply = try await bus.request(subject, payload, timeout: .seconds(60))
            do {
                try ProtoTypes.decode(response, reply.payload)
                return Answer()
            } catch {
                return Answer(failure: "a reply that is not a \(response.protoMessageName) to \(input)")
            }
        } catch BusError.service(let code, let description, let body) {
            guard let e = try? Mesh_V1_Error(serializedBytes: body), e.code != .unspecified else {
                return Answer(code: code, text: description, failure: "error \(code) \"\(description)\" without a mesh.v1.Error body, for \(input)")
            }
            let typed = MeshError(proto: e)
            if code == 500 || e.code == .internal {
                return Answer(code: code, text: description, failure: "internal error \"\(description)\" for \(input)")
            }
            if typed.busCode != code {
                return Answer(code: code, text: description, failure: "header code \(code) but body \(e.code) for \(input)")
            }
            if ProcessInfo.processInfo.environment["MESH_FUZZ_DEBUG"] != nil { print("bus fuzz: \(code) \(description) for \(input)") }
            return Answer(code: code, text: description)
        } catch {
            return Answer(failure: "\(error) for \(input)")
        }
    }
}

/// Real ids to ground random messages in, so that they get past validation: an Enterprise tenant of their own
/// (the lab's tenant, with its running node, is left out so that no message removes that node), its
/// users, two registered nodes without an agent, two devices, and an enrollment token.
struct IDPool: Sendable {
    let tenants: [String]
    let users: [String]
    let nodes: [String]
    let devices: [String]
    let callers: [Mesh_V1_Caller]
    let tokens: [String]

    static func make(_ lab: MeshLab) async throws -> IDPool {
        let t = try await lab.cp.tenant(.enterprise)
        let admin = try await lab.cp.user(t, .admin), owner = try await lab.cp.user(t, .owner)
        let (n1, _) = try await lab.cp.node(t, admin: admin, name: "victim-1", endpoint: "198.51.100.1:51820")
        let (n2, _) = try await lab.cp.node(t, admin: admin, name: "victim-2", endpoint: "198.51.100.2:51820")
        let d1 = try await lab.cp.client.createDevice(caller: owner, label: "victim phone", type: .iphone).device
        let d2 = try await lab.cp.client.createDevice(caller: admin, label: "victim laptop", type: .laptop).device
        let token = try await lab.cp.client.createEnrollmentToken(caller: admin, maxUses: 10_000)
        return IDPool(tenants: [t.id], users: [admin.userID, owner.userID], nodes: [n1.id, n2.id], devices: [d1.id, d2.id],
                      callers: [admin, owner], tokens: [token.token])
    }
}

/// Message types by protobuf full name (the names `$SRV.INFO` gives), resolved from the runtime's
/// type metadata: `mesh.v1.X` is MeshProto's `Mesh_V1_X`, `google.protobuf.Empty` SwiftProtobuf's.
enum ProtoTypes {
    static func message(named fullName: String) -> (any SwiftProtobuf.Message.Type)? {
        let (module, prefix, rest): (String, String, Substring)
        if fullName.hasPrefix("mesh.v1.") {
            (module, prefix, rest) = ("MeshProto", "Mesh_V1_", fullName.dropFirst("mesh.v1.".count))
        } else if fullName.hasPrefix("google.protobuf.") {
            (module, prefix, rest) = ("SwiftProtobuf", "Google_Protobuf_", fullName.dropFirst("google.protobuf.".count))
        } else {
            return nil
        }
        let parts = rest.split(separator: ".").enumerated().map { $0.offset == 0 ? prefix + $0.element : String($0.element) }
        let mangled = "\(module.utf8.count)\(module)" + parts.map { "\($0.utf8.count)\($0)V" }.joined()
        let type = _typeByName(mangled) as? any SwiftProtobuf.Message.Type
        return type?.protoMessageName == fullName ? type : nil
    }

    /// Decodes `bytes` as `type` (throws when they are not one).
    static func decode<M: SwiftProtobuf.Message>(_ type: M.Type, _ bytes: [UInt8]) throws {
        _ = try M(serializedBytes: bytes)
    }

    /// The binary form of a `type` message given as JSON (unknown fields ignored).
    static func reencode<M: SwiftProtobuf.Message>(_ type: M.Type, json: Data) throws -> [UInt8] {
        var options = JSONDecodingOptions()
        options.ignoreUnknownFields = true
        return try M(jsonUTF8Bytes: json, options: options).serializedBytes()
    }
}

/// The inputs for one subject, all drawn from one seed.
struct FuzzInput {
    var rng: SeededRandom
    let request: any SwiftProtobuf.Message.Type
    let others: [any SwiftProtobuf.Message.Type]
    let pool: IDPool

    init(seed: UInt64, request: any SwiftProtobuf.Message.Type, others: [any SwiftProtobuf.Message.Type], pool: IDPool) {
        rng = SeededRandom(seed: seed)
        self.request = request
        self.others = others
        self.pool = pool
    }

    mutating func chance(_ percent: UInt64) -> Bool { rng.next() % 100 < percent }
    mutating func pick<T>(_ xs: [T]) -> T { xs[Int(rng.next() % UInt64(xs.count))] }
    mutating func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) } }

    /// A subject to send to: the pattern's `*` tokens filled with real ids mostly, random ones sometimes.
    /// NodeApplier's subjects name the one running node (no other node has a responder).
    mutating func subject(for served: ServedSubject, nodeID: String) -> String {
        if served.service == MeshServiceName.nodeApplier { return served.subject.replacingOccurrences(of: "*", with: nodeID) }
        var tokens = served.subject.split(separator: ".").map(String.init)
        let stars = tokens.indices.filter { tokens[$0] == "*" }
        for (n, i) in stars.enumerated() {
            if chance(80) {
                // tenant first, then node (the order of every wildcard subject).
                tokens[i] = n == 0 ? pick(pool.tenants) : pick(pool.nodes)
            } else {
                tokens[i] = chance(50) ? UUID().uuidString.lowercased() : pick(["x", "0", "tenant", "-", "A_B"])
            }
        }
        return tokens.joined(separator: ".")
    }

    mutating func next(for served: ServedSubject, nodeID: String) -> (subject: String, payload: [UInt8], kind: String) {
        let subject = subject(for: served, nodeID: nodeID)
        let roll = rng.next() % 100
        var kind: String
        var payload: [UInt8]
        switch roll {
        case 0..<10:
            kind = "random bytes"
            payload = bytes(Int(rng.next() % 300))
        case 10..<25:
            kind = "random message"
            payload = randomMessage(request)
        case 25..<85:
            kind = "grounded message"
            payload = grounded(request, subject: subject)
        case 85..<95:
            kind = "other type"
            payload = chance(50) ? randomMessage(pick(others)) : grounded(pick(others), subject: subject)
        default:
            kind = "empty"
            payload = []
        }
        if roll >= 10 && chance(35) {
            kind = "mutated " + kind
            payload = mutate(payload)
        }
        return (subject, payload, kind)
    }

    mutating func randomMessage(_ type: any SwiftProtobuf.Message.Type) -> [UInt8] {
        let seed = rng.next()
        guard let m = try? RandomMessageBuilder.build(any: type, seed: seed), let b: [UInt8] = try? m.serializedBytes() else { return bytes(16) }
        return b
    }

    /// A random message of `type` with its ids, caller, token, key and endpoint replaced by real or
    /// well-formed values (through its JSON form, so any type works).
    mutating func grounded(_ type: any SwiftProtobuf.Message.Type, subject: String) -> [UInt8] {
        let seed = rng.next()
        guard let m = try? RandomMessageBuilder.build(any: type, seed: seed),
              let json: [UInt8] = try? m.jsonUTF8Bytes(),
              var object = (try? JSONSerialization.jsonObject(with: Data(json))) as? [String: Any] else { return randomMessage(type) }
        object = ground(object, subject: subject)
        guard let data = try? JSONSerialization.data(withJSONObject: object) else { return randomMessage(type) }
        do {
            return try ProtoTypes.reencode(type, json: data)
        } catch {
            if ProcessInfo.processInfo.environment["MESH_FUZZ_DEBUG"] != nil {
                print("bus fuzz: grounding \(type.protoMessageName) failed: \(error): \(String(decoding: data, as: UTF8.self).prefix(400))")
            }
            return randomMessage(type)
        }
    }

    mutating func ground(_ object: [String: Any], subject: String) -> [String: Any] {
        var out: [String: Any] = [:]
        let tokens = subject.split(separator: ".").map(String.init)
        for (key, value) in object {
            switch key {
            case "tenantId":
                // Mostly the tenant the subject names (or a real one), so that subject checks pass.
                out[key] = chance(85) ? (tokens.first { pool.tenants.contains($0) } ?? pick(pool.tenants)) : UUID().uuidString
            case "nodeId":
                out[key] = chance(85) ? (tokens.first { pool.nodes.contains($0) } ?? pick(pool.nodes)) : UUID().uuidString
            case "id":
                out[key] = chance(85) ? UUID().uuidString.lowercased() : value
            case "userId", "ownerUserId":
                out[key] = chance(85) ? pick(pool.users) : UUID().uuidString
            case "deviceId":
                out[key] = chance(85) ? pick(pool.devices) : UUID().uuidString
            case "ownerId":
                out[key] = chance(85) ? pick(pool.devices + pool.nodes) : UUID().uuidString
            case "caller":
                let c = pick(pool.callers)
                var caller: [String: Any] = ["tenantId": c.tenantID, "userId": c.userID]
                caller["role"] = ["ROLE_OWNER", "ROLE_ADMIN", "ROLE_UNSPECIFIED"][Int(rng.next() % 3)]
                if chance(20) { caller["amr"] = ["pwd", "saml"] }
                out[key] = chance(85) ? caller : value
            case "enrollmentToken":
                out[key] = chance(85) ? pick(pool.tokens) : value
            case "publicKey":
                out[key] = chance(85) ? Data(bytes(32)).base64EncodedString() : value
            case "endpoint":
                out[key] = chance(85) ? "198.51.100.\(rng.next() % 250 + 1):\(rng.next() % 60000 + 1)" : value
            case "afterMemberId":
                // Paging: mostly from the start, sometimes after a real or an unknown member.
                out[key] = chance(60) ? "" : chance(50) ? pick(pool.nodes + pool.devices) : UUID().uuidString.lowercased()
            case "afterRevision", "snapshotRevision":
                out[key] = chance(85) ? "\(rng.next() % 50)" : value
            case "lastHandshakeMs":
                out[key] = chance(85) ? "\(Date().unixMilliseconds - Int64(rng.next() % 600_000))" : value
            case "listenPort":
                out[key] = chance(85) ? Int(rng.next() % 65535 + 1) : value
            case "label", "name":
                out[key] = chance(85) ? pick(["phone", "Zoë's iPhone", "laptop 2", "Иван", "edge"]) : value
            case "requestedIpv4":
                out[key] = chance(50) ? "100.64.\(rng.next() % 256).\(rng.next() % 256)" : value
            default:
                if let nested = value as? [String: Any] {
                    out[key] = ground(nested, subject: subject)
                } else if let list = value as? [[String: Any]] {
                    out[key] = list.map { ground($0, subject: subject) }
                } else {
                    out[key] = value
                }
            }
        }
        return out
    }

    /// One of the mutations a broken or hostile peer could send.
    mutating func mutate(_ input: [UInt8]) -> [UInt8] {
        var m = input
        switch rng.next() % 9 {
        case 0:  // flip bits
            if m.isEmpty { return bytes(4) }
            for _ in 0...(rng.next() % 4) { m[Int(rng.next() % UInt64(m.count))] ^= 1 << (rng.next() % 8) }
        case 1:  // cut short
            m = Array(m.prefix(Int(rng.next() % UInt64(m.count + 1))))
        case 2:  // splice random bytes in
            m.insert(contentsOf: bytes(Int(rng.next() % 16) + 1), at: Int(rng.next() % UInt64(m.count + 1)))
        case 3:  // repeat a slice (repeated fields, a field twice)
            if !m.isEmpty {
                let a = Int(rng.next() % UInt64(m.count)), b = min(m.count, a + Int(rng.next() % 32) + 1)
                m += m[a..<b]
            }
        case 4:  // an overlong varint in a varint field
            m += [UInt8(((rng.next() % 15) + 1) << 3)] + [UInt8](repeating: 0xff, count: 10) + [0x01]
        case 5:  // a length-delimited field claiming far more than follows
            m += [UInt8(((rng.next() % 15) + 1) << 3 | 2), 0xff, 0xff, 0xff, 0xff, 0x0f] + bytes(4)
        case 6:  // unknown fields of every wire type
            for wire in [0, 1, 2, 5] as [UInt64] {
                m += varint((100 + rng.next() % 900) << 3 | wire)
                m += wire == 0 ? [0x05] : wire == 1 ? bytes(8) : wire == 2 ? [0x03] + bytes(3) : bytes(4)
            }
        case 7:  // deep nesting: a message inside a message inside ... (field 1, length-delimited)
            var nested: [UInt8] = []
            for _ in 0..<200 { nested = [0x0a] + varint(UInt64(nested.count)) + nested }
            m += nested
        default:  // a wire type the field number does not have (group start / end, reserved 6 and 7)
            m += [UInt8(((rng.next() % 15) + 1) << 3) | UInt8(3 + rng.next() % 5)] + bytes(3)
        }
        return m
    }

    func varint(_ v: UInt64) -> [UInt8] {
        var v = v, out: [UInt8] = []
        repeat {
            out.append(UInt8(v & 0x7f) | (v > 0x7f ? 0x80 : 0))
            v >>= 7
        } while v > 0
        return out
    }
}
