import ArgumentParser
import Foundation
import Logging
import RelayClient
import ServiceKit

/// `meshctl fallback`: the reference client of the phone fallback (docs/fallback.md).
struct Fallback: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Call the API the way a paired phone does: through the relay while it is healthy, over the mesh when it degrades.",
        discussion: """
            The mesh URLs and the tenant CA come from a pairing reply (--pairing, the JSON of POST /cp/api/v1/mesh/devices \
            with "pair": true) or from --mesh-url and --ca. Node names are resolved through the mesh DNS (--dns, a node's \
            mesh address). Sends --count requests, one every --interval-ms, and prints one line per request \
            ("answer<TAB>n<TAB>unix ms<TAB>status<TAB>path<TAB>time<TAB>paths that failed it first" or \
            "error<TAB>n<TAB>unix ms<TAB>why"), then the \
            switches between the relay and the mesh ("switch<TAB>mode<TAB>time since start<TAB>reason"). Exits 1 when a \
            request got no answer on any path.

            \(Env.secretsHelp([Self.tokenSecret]))
            """)

    /// The bearer token of the requests: a secret, so never an option (`ps` shows options).
    static let tokenSecret = SecretSetting("MESH_TOKEN", "The bearer token (JWT or API token) meshctl fallback sends with each request.")

    @Option(help: "The relay's base URL, e.g. http://relay.example:8080.")
    var relay: String

    @Option(help: "A pairing reply (JSON) holding fallback.urls and fallback.ca_certificate_pem.")
    var pairing: String?

    @Option(name: .customLong("mesh-url"), help: "A node's mesh URL (repeatable), when --pairing is not given.")
    var meshURLs: [String] = []

    @Option(help: "The tenant CA (PEM file), when --pairing is not given.")
    var ca: String?

    @Option(help: "Mesh DNS server, ip or ip:port or [ipv6]:port (repeatable).")
    var dns: [String] = []

    @Option(help: "The request path.")
    var path: String = "/api/mesh/devices"


    @Option(help: "How many requests.")
    var count: Int = 1

    @Option(name: .customLong("interval-ms"), help: "Milliseconds between requests.")
    var intervalMs: Int = 200

    /// One line on stdout, written at once (another process reads it while this one runs).
    static func emit(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }

    /// Wall-clock milliseconds, so another process can line its events up with these lines.
    static func unixMs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    func run() async throws {
        let token = try Env.secret(Self.tokenSecret.name) ?? ""
        var urls = meshURLs
        var caPEM = try ca.map { try String(contentsOfFile: $0, encoding: .utf8) }
        if let pairing {
            let data = try Data(contentsOf: URL(fileURLWithPath: pairing))
            guard let root = try JSONSerialization.jsonObject(with: data) as? [String: Any], let f = root["fallback"] as? [String: Any],
                  let u = f["urls"] as? [String], let pem = f["ca_certificate_pem"] as? String
            else { throw ValidationError("\(pairing) holds no fallback (pair the device with \"pair\": true)") }
            urls = u
            caPEM = pem
        }
        guard let caPEM, !urls.isEmpty else { throw ValidationError("give --pairing, or --mesh-url and --ca") }
        guard let relayURL = URL(string: relay), relayURL.host != nil else { throw ValidationError("--relay must be a URL") }
        var servers: [(host: String, port: Int)] = []
        for d in dns {
            if let colon = d.lastIndex(of: ":"), d.hasPrefix("[") || d.filter({ $0 == ":" }).count == 1, let port = Int(d[d.index(after: colon)...]) {
                servers.append((String(d[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]")), port))
            } else {
                servers.append((d, 53))
            }
        }
        let logger = Logger(label: "meshctl.fallback")
        let client = try FallbackClient(relay: relayURL, meshURLs: urls.compactMap(URL.init(string:)), caCertificatePEM: caPEM,
                                        resolver: MeshResolver(servers: servers), logger: logger)
        let start = ContinuousClock.now
        let headers: [(String, String)] = token.isEmpty ? [] : [("Authorization", "Bearer \(token)")]
        let count = max(1, self.count), path = self.path, intervalMs = self.intervalMs
        let failures = try await withThrowingTaskGroup(of: Int?.self) { group in
            // The relay probe runs beside the requests.
            group.addTask {
                try await client.run()
                return nil
            }
            group.addTask {
                var failures = 0
                for i in 0..<count {
                    do {
                        let r = try await client.send(FallbackRequest(path: path, headers: headers))
                        let failed = r.failedBefore.map { "\($0.path): \($0.error)" }.joined(separator: "; ")
                        Self.emit("answer\t\(i)\t\(Self.unixMs())\t\(r.status)\t\(r.path)\t\(r.elapsed)\t\(failed)")
                    } catch {
                        failures += 1
                        Self.emit("error\t\(i)\t\(Self.unixMs())\t\(error)")
                    }
                    if i + 1 < count { try await Task.sleep(for: .milliseconds(intervalMs)) }
                }
                return failures
            }
            var failures = 0
            for try await result in group {
                if let result {
                    failures = result
                    group.cancelAll()
                }
            }
            return failures
        }
        for t in client.transitions {
            Self.emit("switch\t\(t.mode.rawValue)\t\(t.at - start)\t\(t.reason)")
        }
        if failures > 0 { throw ExitCode(1) }
    }
}
