import Foundation
import MeshTestSupport

/// The executables of the product, in the order docs/configuration.md names them.
let executables = ["AllocatorSvc", "ProvisionSvc", "FanoutSvc", "NodeApplier", "Gateway", "meshctl"]

/// The path of a built executable, or a failure that says how to build it.
func executablePath(_ name: String) throws -> String {
    let path = TestEnvironment.binDir.appendingPathComponent(name).path
    guard FileManager.default.isExecutableFile(atPath: path) else {
        throw TestSetupError.failed("\(path) is missing: run `swift build --build-tests` (or `make test`) first")
    }
    return path
}

/// Runs `executable` with `arguments` in an environment holding only `environment` and `PATH`,
/// waiting at most `deadline`; a process still running then is killed and reported.
func runClean(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
              deadline: Duration = .seconds(60)) throws -> (status: Int32, stdout: String, stderr: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = arguments
    // Wide and tall, so ArgumentParser never wraps a line of the help.
    p.environment = ["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin", "COLUMNS": "4000", "LINES": "100"]
        .merging(environment) { _, new in new }
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("exe-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let out = dir.appendingPathComponent("out"), err = dir.appendingPathComponent("err")
    guard FileManager.default.createFile(atPath: out.path, contents: nil), FileManager.default.createFile(atPath: err.path, contents: nil) else {
        throw TestSetupError.failed("cannot create output files in \(dir.path)")
    }
    p.standardOutput = try FileHandle(forWritingTo: out)
    p.standardError = try FileHandle(forWritingTo: err)
    p.standardInput = FileHandle.nullDevice
    try p.run()
    let end = ContinuousClock.now + deadline
    while p.isRunning && ContinuousClock.now < end { usleep(20_000) }
    if p.isRunning {
        p.terminate()
        p.waitUntilExit()
        throw TestSetupError.failed("\(executable) \(arguments.joined(separator: " ")) still ran after \(deadline)")
    }
    p.waitUntilExit()
    return (p.terminationStatus, (try? String(contentsOf: out, encoding: .utf8)) ?? "", (try? String(contentsOf: err, encoding: .utf8)) ?? "")
}

/// One setting as an executable's `--help` shows it.
struct HelpSetting: Hashable {
    /// The environment variable.
    var variable: String
    /// The command-line option (`--nats-url`), nil for a secret.
    var option: String?
    /// The default as `--help` shows it; nil when there is none.
    var defaultValue: String?
    /// The help text, without the variable's name and the default.
    var meaning: String
}

/// What one help page lists.
struct HelpPage {
    var settings: [HelpSetting] = []
    var subcommands: [String] = []
}

/// Reads ArgumentParser's help output: options whose help ends with `(env NAME).`, the lines of
/// the secrets block (`Env.secretsHelp`), and the subcommands. An option's help stands beside its
/// name, or on the next line when the name is long.
func parseHelp(_ text: String) -> HelpPage {
    var page = HelpPage()
    enum Section { case other, secrets, options, subcommands }
    var section = Section.other
    var options: [(label: String, help: String)] = []
    for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
        let line = String(raw)
        if line.hasPrefix("Secrets (only from the environment") { section = .secrets; continue }
        if line == "OPTIONS:" { section = .options; continue }
        if line == "SUBCOMMANDS:" { section = .subcommands; continue }
        if line.isEmpty || !line.hasPrefix(" ") { if !line.isEmpty { section = .other }; continue }
        let trimmed = line.trimmingCharacters(in: .whitespaces)
        switch section {
        case .secrets:
            guard let gap = trimmed.range(of: "  ") else { continue }
            page.settings.append(HelpSetting(variable: String(trimmed[..<gap.lowerBound]), option: nil, defaultValue: nil,
                                             meaning: trimmed[gap.upperBound...].trimmingCharacters(in: .whitespaces)))
        case .options:
            if trimmed.hasPrefix("-") {
                // The label is the option's names and value placeholder ("-v, --name <name>"); the help
                // follows after at least one space (only one when the label fills its column).
                let words = trimmed.split(separator: " ", omittingEmptySubsequences: true)
                let labelWords = words.prefix { $0.hasPrefix("-") || ($0.hasPrefix("<") && $0.hasSuffix(">")) }
                options.append((labelWords.joined(separator: " "), words.dropFirst(labelWords.count).joined(separator: " ")))
            } else if !options.isEmpty {
                options[options.count - 1].help += (options[options.count - 1].help.isEmpty ? "" : " ") + trimmed
            }
        case .subcommands:
            // A name stands at two spaces; deeper lines continue a description, and the closing
            // "See 'meshctl help <subcommand>' …" line is no subcommand.
            guard line.hasPrefix("  "), !line.hasPrefix("   ") else { continue }
            let name = String(trimmed.prefix { $0 != " " })
            let isName = name.first?.isLowercase == true && name.allSatisfy { $0.isLowercase || $0.isNumber || $0 == "-" }
            if isName, name != "help" { page.subcommands.append(name) }
        case .other:
            continue
        }
    }
    for (label, text) in options {
        guard let option = label.split(separator: " ").map({ $0.trimmingCharacters(in: [","]) }).first(where: { $0.hasPrefix("--") }) else { continue }
        var help = text
        var defaultValue: String?
        if let d = help.range(of: " (default: ", options: .backwards), help.hasSuffix(")") {
            defaultValue = String(help[d.upperBound..<help.index(before: help.endIndex)])
            help = String(help[..<d.lowerBound])
        }
        guard let env = help.range(of: " (env ", options: .backwards), help.hasSuffix(").") else { continue }
        let variable = String(help[env.upperBound..<help.index(help.endIndex, offsetBy: -2)])
        page.settings.append(HelpSetting(variable: variable, option: option, defaultValue: defaultValue,
                                         meaning: String(help[..<env.lowerBound]) + "."))
    }
    return page
}

/// Every setting an executable shows, over its help page and those of all its subcommands, with
/// `environment` set (nothing else but PATH).
func settings(of executable: String, environment: [String: String] = [:]) throws -> [HelpSetting] {
    let path = try executablePath(executable)
    var found: [HelpSetting] = []
    var queue: [[String]] = [[]]
    var pages = 0
    while !queue.isEmpty {
        let command = queue.removeFirst()
        pages += 1
        // A help page that lists itself again would loop forever: fail instead.
        guard pages <= 500 else { throw TestSetupError.failed("\(executable): more than 500 help pages; last \(command)") }
        let r = try runClean(path, command + ["--help"], environment: environment)
        guard r.status == 0 else {
            throw TestSetupError.failed("\(executable) \(command.joined(separator: " ")) --help exited \(r.status): \(r.stderr)")
        }
        let page = parseHelp(r.stdout)
        for s in page.settings where !found.contains(s) { found.append(s) }
        queue += page.subcommands.map { command + [$0] }
    }
    return found
}
