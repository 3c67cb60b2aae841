import ArgumentParser
import Foundation
import Logging
import MeshBus

/// Reads settings from the environment. Every variable has a documented default (README.md,
/// docs/configuration.md), and the command line can override any of them.
public enum Env {
    /// The value of `name`, or `fallback` when unset or empty.
    public static func string(_ name: String, _ fallback: String) -> String {
        let v = ProcessInfo.processInfo.environment[name] ?? ""
        return v.isEmpty ? fallback : v
    }

    /// The value of `name` as an integer, or `fallback`.
    public static func int(_ name: String, _ fallback: Int) -> Int {
        Int(string(name, "")) ?? fallback
    }

    /// The value of `name` as a boolean (1/true/yes/on), or `fallback`.
    public static func bool(_ name: String, _ fallback: Bool) -> Bool {
        switch string(name, "").lowercased() {
        case "1", "true", "yes", "on": true
        case "0", "false", "no", "off": false
        default: fallback
        }
    }

    /// The value of `name` as seconds (fractions allowed), or `fallback`.
    public static func seconds(_ name: String, _ fallback: Double) -> Double {
        Double(string(name, "")) ?? fallback
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
}

/// Options every executable shares: the bus, logging and metrics.
public struct CommonOptions: ParsableArguments, Sendable {
    @Option(name: .customLong("nats-url"), help: "NATS server URLs, comma-separated (env MESH_NATS_URL).")
    public var natsURL: String = Env.string("MESH_NATS_URL", "nats://127.0.0.1:4222")

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error, critical (env MESH_LOG_LEVEL).")
    public var logLevel: String = Env.string("MESH_LOG_LEVEL", "info")

    @Option(name: .customLong("log-format"), help: "text or json (env MESH_LOG_FORMAT).")
    public var logFormat: String = Env.string("MESH_LOG_FORMAT", "text")

    @Option(name: .customLong("metrics-address"), help: "host:port for the Prometheus /metrics endpoint; empty disables it (env MESH_METRICS_ADDRESS).")
    public var metricsAddress: String = Env.string("MESH_METRICS_ADDRESS", "")

    @Option(name: .customLong("instance"), help: "A name for this replica in logs and on the bus (env MESH_INSTANCE).")
    public var instance: String = Env.string("MESH_INSTANCE", ProcessInfo.processInfo.hostName)

    public init() {}

    /// The bus settings: credentials from MESH_NATS_CREDS[_FILE] or MESH_NATS_TOKEN[_FILE], TLS from
    /// MESH_NATS_TLS_CA / MESH_NATS_TLS_CERT / MESH_NATS_TLS_KEY.
    public func busConfiguration(name: String, inboxPrefix: String = "_INBOX") throws -> BusConfiguration {
        var c = BusConfiguration(servers: natsURL.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) },
                                 name: "\(name)@\(instance)", inboxPrefix: inboxPrefix)
        if let path = ProcessInfo.processInfo.environment["MESH_NATS_CREDS_FILE"], !path.isEmpty {
            c.credentials = try BusCredentials.parseCreds(String(contentsOfFile: path, encoding: .utf8))
        } else if let creds = try Env.secret("MESH_NATS_CREDS") {
            c.credentials = try BusCredentials.parseCreds(creds)
        } else if let token = try Env.secret("MESH_NATS_TOKEN") {
            c.credentials = .token(token)
        }
        let ca = Env.string("MESH_NATS_TLS_CA", "")
        if !ca.isEmpty || natsURL.hasPrefix("tls://") {
            c.tls = BusTLS(caFile: ca.isEmpty ? nil : ca,
                           certFile: Env.string("MESH_NATS_TLS_CERT", "").nilIfEmpty,
                           keyFile: Env.string("MESH_NATS_TLS_KEY", "").nilIfEmpty)
        }
        return c
    }
}
