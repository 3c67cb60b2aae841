import Foundation
import MeshTestSupport
import Testing

/// docs/configuration.md is the executables' `--help`: its tables are rendered here from the help
/// pages and must match the file, so a setting added, renamed or changed in code without the doc
/// (or the other way round) fails. `MESH_WRITE_CONFIGURATION_DOC=1 swift test --filter
/// ConfigurationTests` rewrites the tables after a deliberate change.
@Suite("Configuration", .timeLimit(.minutes(5)))
struct ConfigurationTests {
    static let docPath = TestEnvironment.repoRoot.appendingPathComponent("docs/configuration.md")
    static let begin = "<!-- BEGIN generated from the executables' --help (Tests/ExecutableTests); do not edit by hand -->"
    static let end = "<!-- END generated -->"

    /// Every executable's settings (no MESH_* variable set, so the defaults are the built-in ones).
    static func allSettings() throws -> [(executable: String, setting: HelpSetting)] {
        try executables.flatMap { exe in try settings(of: exe).map { (exe, $0) } }
    }

    /// The generated part of docs/configuration.md.
    static func render(_ all: [(executable: String, setting: HelpSetting)]) -> String {
        func cell(_ s: String) -> String { s.replacingOccurrences(of: "|", with: "\\|") }
        func code(_ s: String) -> String { "`" + s + "`" }
        func readers(_ list: [String]) -> String { Set(list) == Set(executables) ? "all" : list.joined(separator: ", ") }
        // One row per distinct setting; an identical setting of several executables is one row.
        var rows: [HelpSetting: [String]] = [:]
        var order: [HelpSetting] = []
        for (exe, s) in all {
            if rows[s] == nil { order.append(s) }
            if rows[s]?.contains(exe) != true { rows[s, default: []].append(exe) }
        }
        let sorted = order.sorted { ($0.variable, rows[$0]!.first!) < ($1.variable, rows[$1]!.first!) }
        var out = [begin, "", "### Options", "",
                   "| variable | read by | option | default | meaning |", "| --- | --- | --- | --- | --- |"]
        for s in sorted where s.option != nil {
            out.append("| \(code(s.variable)) | \(readers(rows[s]!)) | \(code(s.option!)) | "
                       + "\(s.defaultValue.map { code(cell($0)) } ?? "(empty)") | \(cell(s.meaning)) |")
        }
        out += ["", "### Secrets", "",
                "Each also as `NAME_FILE`, the path of a file holding it (the file wins); never an option, since `ps` shows options.", "",
                "| variable | read by | meaning |", "| --- | --- | --- |"]
        for s in sorted where s.option == nil {
            out.append("| \(code(s.variable)) | \(readers(rows[s]!)) | \(cell(s.meaning)) |")
        }
        out += ["", end]
        return out.joined(separator: "\n")
    }

    /// The generated part of a document (between the markers, markers included).
    static func generatedPart(of doc: String) -> String? {
        guard let b = doc.range(of: begin), let e = doc.range(of: end, range: b.upperBound..<doc.endIndex) else { return nil }
        return String(doc[b.lowerBound..<e.upperBound])
    }

    @Test func documentMatchesTheHelpPages() throws {
        let expected = Self.render(try Self.allSettings())
        let doc = try String(contentsOf: Self.docPath, encoding: .utf8)
        guard let current = Self.generatedPart(of: doc) else {
            Issue.record("docs/configuration.md has no generated part between \(Self.begin) and \(Self.end)")
            return
        }
        if ProcessInfo.processInfo.environment["MESH_WRITE_CONFIGURATION_DOC"] == "1" {
            try doc.replacingOccurrences(of: current, with: expected).write(to: Self.docPath, atomically: true, encoding: .utf8)
            return
        }
        let a = current.split(separator: "\n", omittingEmptySubsequences: false)
        let b = expected.split(separator: "\n", omittingEmptySubsequences: false)
        let missing = b.filter { !a.contains($0) }, stale = a.filter { !b.contains($0) }
        #expect(current == expected, """
            docs/configuration.md does not match the executables' --help. Lines the help gives that the doc lacks:
            \(missing.joined(separator: "\n"))
            Lines of the doc the help no longer gives:
            \(stale.joined(separator: "\n"))
            Rewrite with MESH_WRITE_CONFIGURATION_DOC=1 swift test --filter ConfigurationTests
            """)
    }

    /// The variable an option's help names is the one that sets its default: with every variable
    /// set to another valid value, every help page shows those values as the defaults.
    @Test func everyOptionReadsTheVariableItNames() throws {
        for exe in executables {
            let plain = try settings(of: exe).filter { $0.option != nil }
            #expect(!plain.isEmpty, "\(exe) shows no option read from the environment")
            var sentinel: [String: String] = [:]
            for s in plain {
                sentinel[s.variable] = switch s.defaultValue {
                case "true": "false"
                case "false": "true"
                case let d? where Int(d) != nil: String(Int(d)! + 7)
                case let d? where Double(d) != nil: String(Double(d)! + 1.5)
                default: "from-\(s.variable.lowercased())"
                }
            }
            let shown = try settings(of: exe, environment: sentinel).filter { $0.option != nil }
            for s in shown {
                #expect(s.defaultValue == sentinel[s.variable], "\(exe) \(s.option!): \(s.variable) does not set its default")
            }
            #expect(Set(shown.map(\.variable)) == Set(plain.map(\.variable)))
        }
    }

    /// Every `"MESH_…"` literal in the code the executables are built from is a documented setting
    /// (a secret's `_FILE` form counts as the secret).
    @Test func everyVariableInTheCodeIsDocumented() throws {
        let doc = try String(contentsOf: Self.docPath, encoding: .utf8)
        let documented = Self.generatedPart(of: doc) ?? ""
        // Test support, the lab and the protobuf-c interop codes are not part of any executable's settings.
        let notExecutables: Set = ["MeshTestSupport", "meshlab", "ProtoInterop", "CMeshProtoC"]
        let sources = TestEnvironment.repoRoot.appendingPathComponent("Sources")
        var names: Set<String> = []
        let pattern = try Regex(#""(MESH_[A-Z0-9_]+)""#)
        for target in try FileManager.default.contentsOfDirectory(atPath: sources.path) where !notExecutables.contains(target) {
            let dir = sources.appendingPathComponent(target)
            guard let files = FileManager.default.enumerator(atPath: dir.path) else { continue }
            for case let file as String in files where file.hasSuffix(".swift") {
                let text = try String(contentsOf: dir.appendingPathComponent(file), encoding: .utf8)
                for m in text.matches(of: pattern) { names.insert(String(text[m.range]).trimmingCharacters(in: ["\""])) }
            }
        }
        #expect(names.count > 20, "the scan found only \(names.sorted())")
        for name in names.sorted() {
            // A secret's `NAME_FILE` is documented as NAME; an option may end in _FILE itself.
            let secret = name.hasSuffix("_FILE") ? String(name.dropLast(5)) : name
            #expect(documented.contains("`\(name)`") || documented.contains("`\(secret)`"),
                    "\(name) is read in Sources/ but not in docs/configuration.md (nor in any --help)")
        }
    }

    /// A value that cannot be read stops the process with a message naming the variable, instead
    /// of becoming the default.
    @Test(arguments: [
        ("AllocatorSvc", "MESH_ALLOC_QUARANTINE_SECONDS", "five minutes"),
        ("ProvisionSvc", "MESH_RATE_LIMIT", "5x"),
        ("ProvisionSvc", "MESH_RATE_WINDOW_SECONDS", "1m"),
        ("NodeApplier", "MESH_NODE_RESYNC_SECONDS", "-1"),
        ("NodeApplier", "MESH_NODE_FORWARDING", "maybe"),
        ("Gateway", "MESH_PRITUNL_CONFIGURED", "yes please"),
        ("Gateway", "MESH_GATEWAY_SERVICE_TIMEOUT_SECONDS", "nan"),
        ("FanoutSvc", "MESH_FANOUT_PAGE_SIZE", "2000.5"),
    ])
    func badNumbersAndBooleansStopTheProcess(executable: String, variable: String, value: String) throws {
        // --help reads every default, so it is where a bad variable is caught; without the check it exits 0.
        let r = try runClean(try executablePath(executable), ["--help"], environment: [variable: value])
        #expect(r.status == 64, "\(executable) with \(variable)=\(value) exited \(r.status)")
        #expect(r.stderr.contains(variable), "the message names the variable: \(r.stderr)")
        #expect(!r.stdout.contains("USAGE:"), "no help printed as if nothing were wrong")
    }

    /// Values that parse but are not allowed stop the process before it connects to anything,
    /// naming the option and its variable.
    @Test(arguments: [
        ("AllocatorSvc", "MESH_LOG_LEVEL", "loud"),
        ("FanoutSvc", "MESH_LOG_FORMAT", "xml"),
        ("Gateway", "MESH_METRICS_ADDRESS", "9090"),
        ("ProvisionSvc", "MESH_DB_POOL_SIZE", "0"),
    ])
    func disallowedValuesStopTheProcess(executable: String, variable: String, value: String) throws {
        // Pointed at nothing, so that a process that wrongly started would fail (or be killed) rather than serve.
        let r = try runClean(try executablePath(executable), [],
                             environment: [variable: value, "MESH_NATS_URL": "nats://127.0.0.1:1", "MESH_DATABASE_URL": "postgresql://127.0.0.1:1/x",
                                           "MESH_JWT_SECRET": String(repeating: "k", count: 32)],
                             deadline: .seconds(30))
        #expect(r.status == 64, "\(executable) with \(variable)=\(value) exited \(r.status): \(r.stderr)")
        #expect(r.stderr.contains(variable), "the message names the variable: \(r.stderr)")
    }
}
