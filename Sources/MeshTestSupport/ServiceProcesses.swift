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
        let inbox = "_INBOX.ping.\(Nuid.next())"
        let sub = try bus.subscribe(inbox)
        try await bus.flush()
        try bus.publish(service.map { "$SRV.PING.\($0)" } ?? "$SRV.PING", [], reply: inbox)
        var out: [BusService.PingResponse] = []
        let collector = Task {
            var got: [BusService.PingResponse] = []
            for await m in sub {
                if let p = try? JSONDecoder().decode(BusService.PingResponse.self, from: Data(m.payload)) { got.append(p) }
            }
            return got
        }
        try await Task.sleep(for: window)
        sub.unsubscribe()
        out = await collector.value
        return out
    }
}
