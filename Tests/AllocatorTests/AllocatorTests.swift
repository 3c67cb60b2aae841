import AllocatorCore
import Foundation
import MeshBus
import MeshDomain
import MeshNet
import MeshProto
import MeshStore
import MeshTestSupport
import Testing

/// A migrated database of its own plus an in-process allocator.
struct AllocatorFixture {
    let db: TestDatabase
    let store: Store
    let allocator: Allocator

    static func make(_ config: AllocatorConfiguration = AllocatorConfiguration(tenantPrefixLength: 24)) async throws -> AllocatorFixture {
        let db = try await TestDatabase.create(prefix: "alloc")
        let store = Store(StoreConfiguration(url: db.url, poolSize: 8, schema: AllocatorSchema.schema.name), logger: TestEnvironment.logger("t"))
        try await store.migrate(AllocatorSchema.schema)
        return AllocatorFixture(db: db, store: store, allocator: Allocator(store: store, configuration: config, logger: TestEnvironment.logger("alloc")))
    }

    func close() async {
        store.close()
        await db.drop()
    }

    /// Every lease of the tenant as (owner, host).
    func leases(_ tenant: UUID) async throws -> [(UUID, Int)] {
        try await store.query("SELECT owner_id, host FROM leases WHERE tenant_id = $1", tenant).map {
            (try $0.decode("owner_id", as: UUID.self), try $0.decode("host", as: Int.self))
        }
    }
}

@Suite(.timeLimit(.minutes(10)), .enabled(if: TestEnvironment.hasInfra, "\(TestEnvironment.skipReason)"))
struct AllocatorTests {
    @Test func tenantPrefixesAreStableAndWellFormed() async throws {
        let f = try await AllocatorFixture.make(AllocatorConfiguration())
        let t = UUID()
        let (p, existing) = try await f.allocator.ensureTenant(t)
        #expect(!existing)
        #expect(p.ipv4.length == 16)
        #expect(IPPrefix("100.64.0.0/10")!.contains(p.ipv4))
        #expect(p.ipv4.isNetwork)
        #expect(p.ipv6.length == 48)
        // RFC 4193: fd00::/8 with a 40-bit global id.
        #expect(IPPrefix("fd00::/8")!.contains(p.ipv6.address))
        // The address plan: node and device ranges are disjoint and together cover the prefix.
        #expect(p.deviceRanges.filter { if case .v4 = $0.address { true } else { false } }.map(\.length) == [20, 19, 18, 17])
        for d in p.deviceRanges { for n in p.nodeRanges { #expect(!d.overlaps(n)) } }
        let (again, existing2) = try await f.allocator.ensureTenant(t)
        #expect(existing2)
        #expect(again == p)
        await f.close()
    }

    @Test func prefixPolicyUniqueThenSharedAndUnique() async throws {
        // A /14 pool holds four /16s.
        let shared = try await AllocatorFixture.make(AllocatorConfiguration(pool: IPPrefix("100.64.0.0/14")!, tenantPrefixLength: 16))
        var seen: [IPPrefix] = []
        for _ in 0..<10 { seen.append(try await shared.allocator.ensureTenant(UUID()).0.ipv4) }
        #expect(Set(seen.prefix(4)).count == 4, "the first four tenants get unique blocks")
        #expect(Set(seen).count == 4, "later tenants reuse blocks")
        await shared.close()

        let unique = try await AllocatorFixture.make(AllocatorConfiguration(pool: IPPrefix("100.64.0.0/14")!, tenantPrefixLength: 16, policy: .unique))
        for _ in 0..<4 { _ = try await unique.allocator.ensureTenant(UUID()) }
        await #expect(throws: MeshError.self) { _ = try await unique.allocator.ensureTenant(UUID()) }
        await unique.close()
    }

    @Test func defaultPolicyServesTenThousandTenants() async throws {
        let f = try await AllocatorFixture.make(AllocatorConfiguration())
        try await withThrowingTaskGroup(of: Void.self) { group in
            for w in 0..<8 {
                group.addTask {
                    for _ in 0..<1250 { _ = try await f.allocator.ensureTenant(UUID()) }
                    _ = w
                }
            }
            try await group.waitForAll()
        }
        let row = try await f.store.query("SELECT count(*) AS n, count(DISTINCT v4_network) AS blocks, count(DISTINCT v6_prefix) AS ula FROM tenant_prefixes").first!
        #expect(try row.decode("n", as: Int.self) == 10_000)
        #expect(try row.decode("blocks", as: Int.self) == 64, "every /16 of 100.64.0.0/10 in use")
        #expect(try row.decode("ula", as: Int.self) == 10_000, "every tenant has its own ULA /48")
        await f.close()
    }

    @Test func allocationIsIdempotentByOwner() async throws {
        let f = try await AllocatorFixture.make()
        let t = UUID(), owner = UUID()
        _ = try await f.allocator.ensureTenant(t)
        let (a, e1) = try await f.allocator.allocate(tenant: t, owner: owner, kind: .device)
        let (b, e2) = try await f.allocator.allocate(tenant: t, owner: owner, kind: .device)
        #expect(!e1)
        #expect(e2)
        #expect(a.ipv4 == b.ipv4 && a.ipv6 == b.ipv6)
        // The IPv6 address carries the same host number as the IPv4 one.
        #expect(a.ipv6.low & 0xffff == UInt64(a.ipv4.value & 0xff))
        // The same owner asking for the other kind is a conflict, not a second address.
        await #expect(throws: MeshError.self) { _ = try await f.allocator.allocate(tenant: t, owner: owner, kind: .node) }
        #expect(try await f.leases(t).count == 1)
        await f.close()
    }

    @Test func requestedAddressesAndConflicts() async throws {
        let f = try await AllocatorFixture.make()
        let t = UUID()
        let p = try await f.allocator.ensureTenant(t).0
        let want = p.addresses(host: 200).0
        let (l, _) = try await f.allocator.allocate(tenant: t, owner: UUID(), kind: .device, requested: want)
        #expect(l.ipv4 == want)
        await #expect(throws: MeshError.conflict("\(want) is already in use")) {
            _ = try await f.allocator.allocate(tenant: t, owner: UUID(), kind: .device, requested: want)
        }
        // Outside the tenant prefix, and the node range for a device.
        await #expect(throws: MeshError.self) {
            _ = try await f.allocator.allocate(tenant: t, owner: UUID(), kind: .device, requested: IPv4Address("10.0.0.1")!)
        }
        await #expect(throws: MeshError.self) {
            _ = try await f.allocator.allocate(tenant: t, owner: UUID(), kind: .device, requested: p.addresses(host: 1).0)
        }
        // The bump pointer skips the requested address when it gets there.
        var hosts: Set<Int> = []
        for _ in 0..<200 {
            if let l = try? await f.allocator.allocate(tenant: t, owner: UUID(), kind: .device).0 { hosts.insert(l.host) }
        }
        #expect(!hosts.contains(200))
        await f.close()
    }

    @Test func exhaustionQuarantineAndReuse() async throws {
        // A /26 tenant: node block 1..3, devices 4..62 (59 addresses).
        // An hour's quarantine, ended below by moving its end to now: nothing here depends on how
        // long a step takes.
        let f = try await AllocatorFixture.make(AllocatorConfiguration(tenantPrefixLength: 26, quarantine: .seconds(3600)))
        let t = UUID()
        let p = try await f.allocator.ensureTenant(t).0
        var owners: [UUID] = []
        for _ in 0..<59 {
            let o = UUID()
            let l = try await f.allocator.allocate(tenant: t, owner: o, kind: .device).0
            #expect(l.host >= 4 && l.host <= 62)
            owners.append(o)
        }
        // Exhaustion is reported (a search that loops would hit the deadline).
        let exhausted = try await withDeadline(.seconds(60), "allocate in a full prefix") {
            await meshError { _ = try await f.allocator.allocate(tenant: t, owner: UUID(), kind: .device) }
        }
        #expect(exhausted?.code == .poolExhausted, "\(String(describing: exhausted))")

        let victim = try await f.allocator.lease(tenant: t, owner: owners[10])!
        let released = try await f.allocator.release(tenant: t, owner: owners[10])
        #expect(released?.quarantined == true)
        // During quarantine the address is not handed out.
        let newOwner = UUID()
        await #expect(throws: MeshError.self) { _ = try await f.allocator.allocate(tenant: t, owner: newOwner, kind: .device) }
        try await f.store.query("UPDATE free_hosts SET available_at = now() WHERE tenant_id = $1", t)
        let reused = try await f.allocator.allocate(tenant: t, owner: newOwner, kind: .device).0
        #expect(reused.ipv4 == victim.ipv4)
        _ = p
        await f.close()
    }

    /// The node block is 1/16 of the prefix; nodes beyond it take addresses from the device range
    /// (shared bump pointer, no .0/.255), so a tenant of many nodes is not capped at the block.
    @Test func nodesBeyondTheNodeBlockTakeDeviceRangeAddresses() async throws {
        // A /26 tenant: node block 1..3, devices 4..62.
        let f = try await AllocatorFixture.make(AllocatorConfiguration(tenantPrefixLength: 26, quarantine: .seconds(300)))
        let t = UUID()
        _ = try await f.allocator.ensureTenant(t)
        var hosts: [Int] = []
        for _ in 0..<5 { hosts.append(try await f.allocator.allocate(tenant: t, owner: UUID(), kind: .node).0.host) }
        #expect(hosts == [1, 2, 3, 4, 5], "the block first, then the device range")
        let device = try await f.allocator.allocate(tenant: t, owner: UUID(), kind: .device).0.host
        #expect(device == 6, "devices continue after the nodes that overflowed")
        // Everything is taken once nodes and devices fill the range together; no address twice.
        var all = Set(hosts + [device])
        while let l = try? await f.allocator.allocate(tenant: t, owner: UUID(), kind: all.count % 2 == 0 ? .node : .device).0 {
            #expect(all.insert(l.host).inserted)
        }
        #expect(all.count == 62 && all.min() == 1 && all.max() == 62)
        await f.close()
    }

    @Test func neverPublishedReleasesAreFreeAtOncePublishedOnesWaitOutTheQuarantine() async throws {
        let f = try await AllocatorFixture.make(AllocatorConfiguration(tenantPrefixLength: 24, quarantine: .seconds(300)))
        let t = UUID()
        _ = try await f.allocator.ensureTenant(t)
        let a = try await f.allocator.allocate(tenant: t, owner: UUID(), kind: .device).0
        let released = try await f.allocator.release(tenant: t, owner: a.ownerID, neverPublished: true)
        #expect(released?.quarantined == false)
        let b = try await f.allocator.allocate(tenant: t, owner: UUID(), kind: .device).0
        #expect(b.ipv4 == a.ipv4, "an address no node ever saw is reused immediately")
        let published = try await f.allocator.release(tenant: t, owner: b.ownerID)
        #expect(published?.quarantined == true)
        let c = try await f.allocator.allocate(tenant: t, owner: UUID(), kind: .device).0
        #expect(c.ipv4 != b.ipv4, "a published address waits out its quarantine")
        // Releasing again is harmless: nothing is held any more.
        #expect(try await f.allocator.release(tenant: t, owner: b.ownerID) == nil)
        await f.close()
    }

    @Test func devicesNeverGetAddressesEndingInZeroOr255() async throws {
        // A /22: device hosts 64...1022 cross .255 and .0 three times each.
        let f = try await AllocatorFixture.make(AllocatorConfiguration(tenantPrefixLength: 22, quarantine: .seconds(300)))
        let t = UUID()
        let p = try await f.allocator.ensureTenant(t).0
        var last: [UInt8] = []
        var count = 0
        while true {
            do {
                let l = try await f.allocator.allocate(tenant: t, owner: UUID(), kind: .device).0
                last.append(l.ipv4.octets[3])
                count += 1
            } catch {
                guard case .poolExhausted = error else { throw error }
                break
            }
        }
        #expect(!last.contains(0) && !last.contains(255))
        // Every other device address was handed out: the range minus the .0 and .255 ones inside it.
        let range = (p.nodeBlock...p.capacity)
        let skipped = range.filter { h in let (v4, _) = p.addresses(host: h); return v4.octets[3] == 0 || v4.octets[3] == 255 }.count
        #expect(count == range.count - skipped)
        #expect(skipped > 0)
        // Asking for one explicitly is refused as outside the device range.
        let (dotZero, _) = p.addresses(host: 256)
        await #expect(throws: MeshError.self) { _ = try await f.allocator.allocate(tenant: t, owner: UUID(), kind: .device, requested: dotZero) }
        await f.close()
    }

    /// Thousands of random allocate / release / quarantine-expiry steps against a small prefix, with
    /// the invariants checked after every step against both the database and a model.
    @Test func randomisedInvariants() async throws {
        let f = try await AllocatorFixture.make(AllocatorConfiguration(tenantPrefixLength: 26, quarantine: .seconds(3600)))
        let t = UUID()
        let p = try await f.allocator.ensureTenant(t).0
        var rng = SeededRandom(seed: UInt64(ProcessInfo.processInfo.environment["ALLOC_SEED"] ?? "") ?? UInt64.random(in: 0...UInt64.max))
        let seed = rng.seed
        var model: [UUID: (host: Int, kind: Mesh_V1_PeerKind)] = [:]
        var quarantined: Set<Int> = []
        var allocs = 0, releases = 0, expiries = 0, exhausted = 0
        for step in 0..<3000 {
            let r = rng.next() % 10
            if r < 6 || model.isEmpty {
                let kind: Mesh_V1_PeerKind = rng.next() % 8 == 0 ? .node : .device
                let keys = Array(model.keys)
                let existing: UUID? = keys.isEmpty ? nil : keys[Int(rng.next() % UInt64(keys.count))]
                let owner = (rng.next() % 10 == 0 ? existing : nil) ?? UUID()
                do {
                    let (l, wasExisting) = try await f.allocator.allocate(tenant: t, owner: owner, kind: model[owner]?.kind ?? kind)
                    if let m = model[owner] {
                        #expect(wasExisting && l.host == m.host, "seed \(seed) step \(step): retry must return the same address")
                    } else {
                        #expect(!quarantined.contains(l.host), "seed \(seed) step \(step): quarantined address \(l.host) handed out")
                        model[owner] = (l.host, l.kind)
                    }
                    allocs += 1
                } catch {
                    // (A `catch MeshError.poolExhausted` pattern crashes the 6.3.1 compiler here.)
                    guard case .poolExhausted = error else { throw error }
                    exhausted += 1
                }
            } else if r < 9 {
                let keys = Array(model.keys)
                let owner = keys[Int(rng.next() % UInt64(keys.count))]
                _ = try await f.allocator.release(tenant: t, owner: owner)
                quarantined.insert(model.removeValue(forKey: owner)!.host)
                releases += 1
            } else {
                // Quarantine expiry: time passes for every released address.
                try await f.store.query("UPDATE free_hosts SET available_at = now() - interval '1 second' WHERE tenant_id = $1", t)
                quarantined.removeAll()
                expiries += 1
            }
            // Invariants, from the database.
            let rows = try await f.leases(t)
            let hosts = rows.map(\.1)
            #expect(Set(hosts).count == hosts.count, "seed \(seed) step \(step): an address is held twice")
            #expect(Set(rows.map(\.0)).count == rows.count, "seed \(seed) step \(step): an owner holds two addresses")
            for h in hosts {
                let v4 = p.addresses(host: h).0
                #expect(p.ipv4.contains(.v4(v4)), "seed \(seed): \(v4) outside \(p.ipv4)")
                #expect(h != 0 && h != p.capacity + 1, "seed \(seed): network or broadcast address \(v4) handed out")
            }
            let dbView = Dictionary(rows, uniquingKeysWith: { a, _ in a })
            let modelView = model.mapValues { $0.host }
            #expect(dbView == modelView, "seed \(seed) step \(step): database and model disagree")
        }
        #expect(allocs > 1000 && releases > 500 && expiries > 100 && exhausted > 0, "mix: \(allocs) \(releases) \(expiries) \(exhausted)")
        await f.close()
    }
}

/// A small deterministic generator so a failing run can be replayed with ALLOC_SEED.
struct SeededRandom: RandomNumberGenerator {
    let seed: UInt64
    private var state: UInt64
    init(seed: UInt64) {
        self.seed = seed
        state = seed == 0 ? 0x9e37_79b9_7f4a_7c15 : seed
    }
    mutating func next() -> UInt64 {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return state
    }
}
