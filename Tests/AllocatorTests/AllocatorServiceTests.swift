import AllocatorCore
import Foundation
import MeshBus
import MeshDomain
import MeshProto
import MeshStore
import MeshTestSupport
import Testing

/// Three real AllocatorSvc processes against one database, driven over NATS.
@Suite(.timeLimit(.minutes(10)), .enabled(if: TestEnvironment.hasInfra, "\(TestEnvironment.skipReason)"), .serialized)
struct AllocatorServiceTests {
    @Test func threeReplicasNeverHandOutOneAddressTwice() async throws {
        let db = try await TestDatabase.create(prefix: "allocsvc")
        let nats = try TestNatsServer(name: "alloc")
        let bus = try await TestEnvironment.connectBus("t-alloc", url: nats.url)
        let logDir = TestEnvironment.outputDir("allocator-race")
        // AllocatorSvc migrates on start; start the three replicas at the same time.
        let procs = try await ServiceProcesses.start("AllocatorSvc", count: 3, natsURL: nats.url,
                                                     databaseURL: db.url, bus: bus, logDir: logDir, serviceName: MeshServiceName.allocator)

        func allocate(_ tenant: String, _ owner: String) async throws(MeshError) -> Mesh_V1_AllocateResponse {
            var r = Mesh_V1_AllocateRequest()
            r.tenantID = tenant
            r.ownerID = owner
            r.kind = .device
            return try await bus.call(MeshSubjects.allocatorAllocate, r, timeout: .seconds(30))
        }
        func ensure(_ tenant: String) async throws {
            var r = Mesh_V1_EnsureTenantRequest()
            r.tenantID = tenant
            let _: Mesh_V1_EnsureTenantResponse = try await bus.call(MeshSubjects.allocatorTenant, r, timeout: .seconds(30))
        }

        // 1,000 owners in one tenant, all at once.
        let one = UUID().uuidString.lowercased()
        try await ensure(one)
        let owners = (0..<1000).map { _ in UUID().uuidString.lowercased() }
        let results = try await withThrowingTaskGroup(of: (String, String).self) { group in
            for o in owners { group.addTask { (o, try await allocate(one, o).lease.ipv4) } }
            return try await group.reduce(into: [(String, String)]()) { $0.append($1) }
        }
        #expect(results.count == 1000)
        #expect(Set(results.map(\.1)).count == 1000, "duplicate address handed out")

        // 1,000 more across 50 tenants.
        let tenants = (0..<50).map { _ in UUID().uuidString.lowercased() }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for t in tenants { group.addTask { try await ensure(t) } }
            try await group.waitForAll()
        }
        let spread = try await withThrowingTaskGroup(of: (String, String).self) { group in
            for i in 0..<1000 {
                let t = tenants[i % 50]
                group.addTask { (t, try await allocate(t, UUID().uuidString.lowercased()).lease.ipv4) }
            }
            return try await group.reduce(into: [(String, String)]()) { $0.append($1) }
        }
        #expect(spread.count == 1000)
        let perTenant = Dictionary(grouping: spread, by: \.0)
        #expect(perTenant.count == 50)
        for (_, list) in perTenant {
            #expect(Set(list.map(\.1)).count == list.count, "duplicate inside a tenant")
        }

        // The database agrees: nothing lost, nothing doubled.
        let store = Store(StoreConfiguration(url: db.url, poolSize: 1, schema: TestDatabase.allSchemas), logger: TestEnvironment.logger("t"))
        let row = try await store.query("SELECT count(*) AS n, count(DISTINCT (tenant_id, host)) AS u FROM leases").first!
        #expect(try row.decode("n", as: Int.self) == 2000)
        #expect(try row.decode("u", as: Int.self) == 2000)
        store.close()

        // Every replica took part: each served allocations ($SRV.STATS per instance), and all of
        // them add up to the 2,000 made.
        let served = try await ServiceProcesses.requestsServed(bus: bus, service: MeshServiceName.allocator, endpoint: "allocate",
                                                               instances: ["allocatorsvc-0", "allocatorsvc-1", "allocatorsvc-2"])
        for instance in ["allocatorsvc-0", "allocatorsvc-1", "allocatorsvc-2"] {
            #expect((served[instance] ?? 0) > 0, "\(instance) served no allocation: \(served)")
        }
        #expect(served.values.reduce(0, +) == 2000, "\(served)")
        // Every replica is still up and exits 0 on SIGTERM.
        try await stopChecked(procs)
        await bus.close()
        await db.drop()
    }

    @Test func badInputGetsTypedErrorsAndTheServiceKeepsServing() async throws {
        let db = try await TestDatabase.create(prefix: "allocbad")
        let nats = try TestNatsServer(name: "allocbad")
        let bus = try await TestEnvironment.connectBus("t-alloc-bad", url: nats.url)
        let procs = try await ServiceProcesses.start("AllocatorSvc", natsURL: nats.url, databaseURL: db.url,
                                                     bus: bus, logDir: TestEnvironment.outputDir("allocator-bad"), serviceName: MeshServiceName.allocator)
        func code(_ body: () async throws -> Void) async -> Mesh_V1_ErrorCode? {
            do {
                try await body()
                return nil
            } catch let e as MeshError {
                return e.code
            } catch {
                return .unspecified
            }
        }
        var req = Mesh_V1_AllocateRequest()
        req.tenantID = UUID().uuidString
        req.ownerID = UUID().uuidString
        req.kind = .device
        #expect(await code { let _: Mesh_V1_AllocateResponse = try await bus.call(MeshSubjects.allocatorAllocate, req) } == .notFound)

        var bad = req
        bad.ownerID = "not-a-uuid"
        #expect(await code { let _: Mesh_V1_AllocateResponse = try await bus.call(MeshSubjects.allocatorAllocate, bad) } == .invalidArgument)

        var ens = Mesh_V1_EnsureTenantRequest()
        ens.tenantID = req.tenantID
        let prefixes: Mesh_V1_EnsureTenantResponse = try await bus.call(MeshSubjects.allocatorTenant, ens)
        var outside = req
        outside.requestedIpv4 = "192.168.1.1"
        #expect(await code { let _: Mesh_V1_AllocateResponse = try await bus.call(MeshSubjects.allocatorAllocate, outside) } == .invalidArgument)
        var noKind = req
        noKind.kind = .unspecified
        #expect(await code { let _: Mesh_V1_AllocateResponse = try await bus.call(MeshSubjects.allocatorAllocate, noKind) } == .invalidArgument)

        // Garbage bytes on the subject: a typed error in the ADR-32 headers.
        do {
            _ = try await bus.request(MeshSubjects.allocatorAllocate, [0xff, 0xff, 0xff, 0x01, 0x02])
            Issue.record("garbage must be rejected")
        } catch BusError.service(let c, let text, let body) {
            #expect(c == 400)
            #expect(text.contains("malformed"))
            #expect(MeshError(proto: try Mesh_V1_Error(serializedBytes: body)).code == .invalidArgument)
        }
        // And it still serves.
        let ok: Mesh_V1_AllocateResponse = try await bus.call(MeshSubjects.allocatorAllocate, req)
        #expect(!ok.lease.ipv4.isEmpty)
        #expect(ok.prefixes.ipv4Prefix == prefixes.prefixes.ipv4Prefix)
        #expect(procs[0].isRunning)
        #expect(procs[0].log().contains("request rejected"), "bad input is logged")
        try await procs[0].stopChecked()
        await bus.close()
        await db.drop()
    }
}
