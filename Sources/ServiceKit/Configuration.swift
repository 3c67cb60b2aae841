import ArgumentParser
import Foundation
import Logging
import MeshBus

/// Reads settings from the environment. Every setting of every executable is an option whose
/// default comes from the variable named in its help, or a secret listed in the executable's
/// `--help` (docs/configuration.md is generated from that output). A value that cannot be read stops
/// the process with a message naming the variable: a typo never silently becomes the default.
public enum Env {
    /// The value of `name`, or `fallback` when unset or empty.
    public static func string(_ name: String, _ fallback: String) -> String {
        let v = ProcessInfo.processInfo.environment[name] ?? ""
        return v.isEmpty ? fallback : v
    }

    /// The value of `name` as an integer, or `fallback` when unset or empty.
    public static func int(_ name: String, _ fallback: Int) -> Int {
        let v = string(name, "")
        if v.isEmpty { return fallback }
        guard let i = Int(v) else { invalid(name, v, expected: "an integer") }
        return i
    }

    /// The value of `name` as a boolean (1/true/yes/on or 0/false/no/off), or `fallback` when unset or empty.
    public static func bool(_ name: String, _ fallback: Bool) -> Bool {
        let v = string(name, "")
        switch v.lowercased() {
        case "": return fallback
        case "1", "true", "yes", "on": return true
        case "0", "false", "no", "off": return false
        default: invalid(name, v, expected: "true or false (also 1/0, yes/no, on/off)")
        }
    }

    /// The value of `name` as seconds (fractions allowed, not negative), or `fallback` when unset or empty.
    public static func seconds(_ name: String, _ fallback: Double) -> Double {
        let v = string(name, "")
        if v.isEmpty { return fallback }
        guard let s = Double(v), s.isFinite, s >= 0 else { invalid(name, v, expected: "a number of seconds") }
        return s
    }

    /// A secret from `NAME` or from the file named by `NAME_FILE` (the file wins). Secrets never
    /// come from the command line, where `ps` would show them.
    public static func secret(_ name: String) throws -> String? {
        if let path = ProcessInfo.processInfo.environment[name + "_FILE"], !path.isEmpty {
            do {
                return try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            } catch {
                throw ValidationError("cannot read \(name)_FILE (\(path)): \(error.localizedDescription)")
            }
        }
        let v = ProcessInfo.processInfo.environment[name] ?? ""
        return v.isEmpty ? nil : v
    }

    /// Stops the process on a setting that cannot be read. Option defaults are read while the
    /// command line is parsed, where nothing can be thrown; exit status 64 is the one
    /// ArgumentParser gives a bad option.
    static func invalid(_ name: String, _ value: String, expected: String) -> Never {
        let program = CommandLine.arguments.first.map { URL(fileURLWithPath: $0).lastPathComponent } ?? "mesh"
        FileHandle.standardError.write(Data("\(program): error: \(name)=\"\(value)\" is not \(expected)\n".utf8))
        exit(64)
    }

    /// The lines of a command's `--help` that list `secrets`.
    public static func secretsHelp(_ secrets: [SecretSetting]) -> String {
        let width = secrets.map(\.name.count).max() ?? 0
        return (["Secrets (only from the environment, as NAME or in the file named by NAME_FILE):"]
            + secrets.map { "  " + $0.name.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + $0.help }).joined(separator: "\n")
    }
}

/// A setting read only from the environment, as `NAME` or from the file named by `NAME_FILE`
/// (``Env/secret(_:)``), and listed in the `--help` of every executable that reads it.
public struct SecretSetting: Sendable {
    /// The variable (its `_FILE` form is implied).
    public var name: String
    /// What it holds; the first sentence is the summary docs/configuration.md shows.
    public var help: String

    public init(_ name: String, _ help: String) {
        self.name = name
        self.help = help
    }
}

/// How to reach the bus: every executable that connects shares these options and secrets.
public struct BusOptions: ParsableArguments, Sendable {
    @Option(name: .customLong("nats-url"), help: "NATS server URLs, comma-separated (env MESH_NATS_URL).")
    public var natsURL: String = Env.string("MESH_NATS_URL", "nats://127.0.0.1:4222")

    @Option(name: .customLong("nats-tls-ca"), help: "CA certificate (PEM file) to verify the NATS server with; TLS is also on for tls:// URLs (env MESH_NATS_TLS_CA).")
    public var tlsCA: String = Env.string("MESH_NATS_TLS_CA", "")

    @Option(name: .customLong("nats-tls-cert"), help: "Client certificate (PEM file) for NATS servers that ask for one (env MESH_NATS_TLS_CERT).")
    public var tlsCert: String = Env.string("MESH_NATS_TLS_CERT", "")

    @Option(name: .customLong("nats-tls-key"), help: "Private key (PEM file) of the client certificate (env MESH_NATS_TLS_KEY).")
    public var tlsKey: String = Env.string("MESH_NATS_TLS_KEY", "")

    public init() {}

    /// The secrets of the bus connection.
    public static let secrets = [
        SecretSetting("MESH_NATS_CREDS", "The bus identity: a NATS .creds file (user JWT and nkey seed), e.g. from `meshctl bus init`."),
        SecretSetting("MESH_NATS_TOKEN", "A NATS token, for a server secured by token instead of JWTs (used when MESH_NATS_CREDS is not set)."),
    ]

    public func validate() throws {
        guard natsURL.split(separator: ",").allSatisfy({ !$0.trimmingCharacters(in: .whitespaces).isEmpty }) else {
            throw ValidationError("--nats-url (MESH_NATS_URL) must list server URLs separated by commas")
        }
        guard tlsCert.isEmpty == tlsKey.isEmpty else { throw ValidationError("--nats-tls-cert and --nats-tls-key go together") }
    }

    /// The bus settings for a client named `name`.
    public func busConfiguration(name: String, inboxPrefix: String = "_INBOX") throws -> BusConfiguration {
        var c = BusConfiguration(servers: natsURL.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) },
                                 name: name, inboxPrefix: inboxPrefix)
        if let creds = try Env.secret("MESH_NATS_CREDS") {
            c.credentials = try BusCredentials.parseCreds(creds)
        } else if let token = try Env.secret("MESH_NATS_TOKEN") {
            c.credentials = .token(token)
        }
        if !tlsCA.isEmpty || natsURL.hasPrefix("tls://") {
            c.tls = BusTLS(caFile: tlsCA.nilIfEmpty, certFile: tlsCert.nilIfEmpty, keyFile: tlsKey.nilIfEmpty)
        }
        return c
    }
}

/// Options every service executable shares: the bus, logging and metrics.
public struct CommonOptions: ParsableArguments, Sendable {
    @OptionGroup public var bus: BusOptions

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical (env MESH_LOG_LEVEL).")
    public var logLevel: String = Env.string("MESH_LOG_LEVEL", "info")

    @Option(name: .customLong("log-format"), help: "text or json (env MESH_LOG_FORMAT).")
    public var logFormat: String = Env.string("MESH_LOG_FORMAT", "text")

    @Option(name: .customLong("metrics-address"), help: "host:port for the Prometheus /metrics endpoint; empty disables it (env MESH_METRICS_ADDRESS).")
    public var metricsAddress: String = Env.string("MESH_METRICS_ADDRESS", "")

    @Option(name: .customLong("instance"), help: "A name for this replica in logs and on the bus; empty: the host name (env MESH_INSTANCE).")
    public var instance: String = Env.string("MESH_INSTANCE", "")

    public init() {}

    public func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level (MESH_LOG_LEVEL) must be trace, debug, info, notice, warning, error or critical")
        }
        guard ["text", "json"].contains(logFormat) else { throw ValidationError("--log-format (MESH_LOG_FORMAT) must be text or json") }
        guard metricsAddress.isEmpty || MetricsServer.parse(metricsAddress) != nil else {
            throw ValidationError("--metrics-address (MESH_METRICS_ADDRESS) must be host:port")
        }
    }

    /// The replica's name: `--instance`, or the host name.
    public var instanceName: String { instance.isEmpty ? ProcessInfo.processInfo.hostName : instance }

    /// The bus settings: `name@instance`, with the credentials and TLS of ``BusOptions``.
    public func busConfiguration(name: String, inboxPrefix: String = "_INBOX") throws -> BusConfiguration {
        try bus.busConfiguration(name: "\(name)@\(instanceName)", inboxPrefix: inboxPrefix)
    }
}
