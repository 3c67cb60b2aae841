import Foundation
import MeshBus

/// Starting the real service executables for multi-process tests.
public enum ServiceProcesses {
    /// Starts `count` replicas of a service executable (AllocatorSvc, ProvisionSvc, ...) against the
    /// given NATS and database, and waits until all of them answer `$SRV.PING.<name>`.
    public static func start(_ executable: String, count: Int = 1, natsURL: String, databaseURL: String,
                             environment: [String: String] = [:], bus: BusConnection, logDir: URL,
                             serviceName: String? = nil) async throws -> [ManagedProcess] {
        let path = TestEnvironment.binDir.appendingPathComponent(executable).path
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw TestSetupError.failed("\(path) is missing: build with `swift build` first")
        }
        var procs: [ManagedProcess] = []
        for i in 0..<count {
            var env = environment
            env["MESH_NATS_URL"] = natsURL
            env["MESH_DATABASE_URL"] = databaseURL
            env["MESH_INSTANCE"] = "\(executable.lowercased())-\(i)"
            env["MESH_LOG_LEVEL"] = env["MESH_LOG_LEVEL"] ?? "info"
            procs.append(try ManagedProcess(name: "\(executable)-\(i)-\(Nuid.short())", executable: path, environment: env, logDir: logDir))
        }
        let name = serviceName ?? executable
        let instances = Set(procs.indices.map { "\(executable.lowercased())-\($0)" })
        try await waitForInstances(bus: bus, service: name, instances: instances, timeout: .seconds(60), processes: procs)
        return procs
    }

    /// Waits until every named instance (the `instance` metadata) of a service answers `$SRV.PING`.
    public static func waitForInstances(bus: BusConnection, service: String, instances: Set<String>, timeout: Duration,
                                        processes: [ManagedProcess] = []) async throws {
        let deadline = ContinuousClock.now + timeout
        while true {
            let seen = try await ping(bus: bus, service: service)
            if instances.isSubset(of: Set(seen.compactMap { $0.metadata["instance"] })) { return }
            for p in processes where !p.isRunning {
                throw TestSetupError.failed("\(p.name) exited during start-up; log:\n\(p.log().suffix(3000))")
            }
            if ContinuousClock.now > deadline {
                throw TestSetupError.failed("\(service) instances \(instances) did not all answer $SRV.PING (saw \(seen.map(\.metadata)))")
            }
            try await Task.sleep(for: .milliseconds(200))
        }
    }

    /// Everything that answers `$SRV.PING.<service>` (or `$SRV.PING` when nil) within `window`.
    public static func ping(bus: BusConnection, service: String?, window: Duration = .milliseconds(300)) async throws -> [BusService.PingResponse] {
        try await discover("PING", as: BusService.PingResponse.self, bus: bus, service: service, window: window)
    }

    /// Every instance's `$SRV.INFO` (endpoints, their subjects and metadata) within `window`.
    public static func info(bus: BusConnection, service: String?, window: Duration = .milliseconds(500)) async throws -> [BusService.InfoResponse] {
        try await discover("INFO", as: BusService.InfoResponse.self, bus: bus, service: service, window: window)
    }

    /// Every instance's `$SRV.STATS` (per-endpoint request and error counts) within `window`.
    public static func stats(bus: BusConnection, service: String?, window: Duration = .milliseconds(500)) async throws -> [BusService.StatsResponse] {
        try await discover("STATS", as: BusService.StatsResponse.self, bus: bus, service: service, window: window)
    }

    /// How many requests each instance (by its `instance` metadata) served on `endpoint`, once every
    /// one of `instances` has answered `$SRV.STATS` (asked again until then, up to `timeout`).
    public static func requestsServed(bus: BusConnection, service: String, endpoint: String, instances: Set<String>,
                                      timeout: Duration = .seconds(60)) async throws -> [String: Int] {
        try await waitFor("every instance of \(service) (\(instances.sorted())) answers $SRV.STATS", timeout: timeout, interval: .milliseconds(100)) {
            var served: [String: Int] = [:]
            for s in try await stats(bus: bus, service: service) {
                served[s.metadata["instance"] ?? s.id] = s.endpoints.first { $0.name == endpoint }?.num_requests ?? 0
            }
            return instances.isSubset(of: Set(served.keys)) ? served : nil
        }
    }

    /// Sends `$SRV.<verb>[.<service>]` and collects the answers that arrive within `window` (a
    /// discovery request has no single reply: every instance answers).
    static func discover<R: Decodable & Sendable>(_ verb: String, as: R.Type, bus: BusConnection, service: String?,
                                                 window: Duration) async throws -> [R] {
        let inbox = "_INBOX.discover.\(Nuid.next())"
        let sub = try bus.subscribe(inbox)
        try await bus.flush()
        try bus.publish(service.map { "$SRV.\(verb).\($0)" } ?? "$SRV.\(verb)", [], reply: inbox)
        let collector = Task {
            var got: [R] = []
            for await m in sub {
                if let p = try? JSONDecoder().decode(R.self, from: Data(m.payload)) { got.append(p) }
            }
            return got
        }
        try await Task.sleep(for: window)
        sub.unsubscribe()
        return await collector.value
    }
}
