import Foundation
import MeshDomain
import MeshProto
import Testing

@Suite("Device lifecycle rules", .timeLimit(.minutes(1)))
struct DeviceLifecycleTests {
    let now = Date(timeIntervalSince1970: 1_800_000_000)

    @Test func suspendByOwnerThenAdminTakesOver() throws {
        let active = DeviceLifecycle()
        #expect(active.isActive && active.status == .active)
        let byOwner = try #require(active.suspend(byAdmin: false, at: now))
        #expect(byOwner.status == .suspended && byOwner.suspendReason == .user && byOwner.suspendedAt == now)
        #expect(byOwner.suspend(byAdmin: false, at: now.addingTimeInterval(5)) == nil, "suspending twice changes nothing")
        let byAdmin = try #require(byOwner.suspend(byAdmin: true, at: now.addingTimeInterval(5)))
        #expect(byAdmin.suspendReason == .admin && byAdmin.suspendedAt == now, "the admin's suspension replaces the owner's")
        #expect(byAdmin.suspend(byAdmin: true, at: now) == nil)
        #expect(throws: MeshError.permissionDenied("an admin suspended this device; only an admin can resume it")) {
            _ = try byAdmin.resume(byAdmin: false, at: now)
        }
        let resumed = try #require(try byAdmin.resume(byAdmin: true, at: now))
        #expect(resumed == DeviceLifecycle() && resumed.isActive)
        #expect(try resumed.resume(byAdmin: true, at: now) == nil, "resuming an active device changes nothing")
        #expect(try #require(try byOwner.resume(byAdmin: false, at: now)).isActive, "an owner lifts their own suspension")
    }

    @Test("expiry edges", arguments: [(-1.0, false), (0.0, true), (0.001, true), (60.0, true)])
    func expiryAtTheEdge(secondsPast: Double, due: Bool) {
        let l = DeviceLifecycle(expiresAt: now.addingTimeInterval(-secondsPast))
        #expect(l.isPastExpiry(at: now) == due)
        #expect((l.expire(at: now) != nil) == due)
        if due {
            #expect(l.expire(at: now)?.status == .expired && l.expire(at: now)?.suspendedAt == now)
        }
    }

    @Test func anExpiredDeviceIsSweptOnceAndCannotBeResumedUntilExtended() throws {
        let l = DeviceLifecycle(expiresAt: now.addingTimeInterval(-1))
        let expired = try #require(l.expire(at: now))
        #expect(expired.expire(at: now.addingTimeInterval(10)) == nil, "a suspended device is not swept again")
        for admin in [false, true] {
            #expect(throws: MeshError.self) { _ = try expired.resume(byAdmin: admin, at: now) }
        }
        // A person's suspension that outlives the expiry cannot be lifted either.
        let suspended = DeviceLifecycle(suspendedAt: now.addingTimeInterval(-100), suspendReason: .user, expiresAt: now.addingTimeInterval(-1))
        #expect(suspended.status == .suspended)
        do {
            _ = try suspended.resume(byAdmin: true, at: now)
            Issue.record("resumed past its expiry")
        } catch {
            #expect(error.code == .failedPrecondition && error.message.contains("extend its expiry"))
        }
        #expect(expired.suspend(byAdmin: true, at: now) == nil, "an expired device stays expired")
        // The extension brings an expired device back; a person's suspension stays.
        let extended = try #require(try expired.withExpiry(now.addingTimeInterval(86_400), at: now))
        #expect(extended.isActive && extended.expiresAt == now.addingTimeInterval(86_400))
        let stillSuspended = try #require(try suspended.withExpiry(nil, at: now))
        #expect(stillSuspended.status == .suspended && stillSuspended.expiresAt == nil)
        #expect(try #require(try stillSuspended.resume(byAdmin: false, at: now)).isActive, "once extended, the owner resumes it")
        #expect(try DeviceLifecycle(expiresAt: now).withExpiry(now, at: now.addingTimeInterval(-1)) == nil, "the same expiry changes nothing")
    }

    @Test func aReissueRenewsTheLifetimeButNeverShortensOrImposesIt() throws {
        let day: TimeInterval = 86_400
        let soon = DeviceLifecycle(expiresAt: now.addingTimeInterval(day))
        #expect(soon.renewedByReissue(defaultLifetime: 0, at: now) == nil, "no default lifetime: nothing changes")
        #expect(try #require(soon.renewedByReissue(defaultLifetime: 30 * day, at: now)).expiresAt == now.addingTimeInterval(30 * day))
        #expect(DeviceLifecycle(expiresAt: now.addingTimeInterval(90 * day)).renewedByReissue(defaultLifetime: 30 * day, at: now) == nil,
                "a later expiry stays")
        #expect(DeviceLifecycle().renewedByReissue(defaultLifetime: 30 * day, at: now) == nil, "a device that never expires keeps that")
        let expired = try #require(DeviceLifecycle(expiresAt: now.addingTimeInterval(-1)).expire(at: now))
        let back = try #require(expired.renewedByReissue(defaultLifetime: 30 * day, at: now))
        #expect(back.isActive && back.expiresAt == now.addingTimeInterval(30 * day), "an expired device comes back with its new config")
        let byPerson = DeviceLifecycle(suspendedAt: now, suspendReason: .admin, expiresAt: now.addingTimeInterval(-1))
        #expect(try #require(byPerson.renewedByReissue(defaultLifetime: day, at: now)).status == .suspended, "a person's suspension stays")
    }

    @Test func newExpiriesMustLieInTheFutureAndWithinTenYears() {
        for bad in [now, now.addingTimeInterval(-1), now.addingTimeInterval(DeviceLifecycle.maxLifetime + 1)] {
            #expect(throws: MeshError.self) { _ = try DeviceLifecycle().withExpiry(bad, at: now) }
            #expect(throws: MeshError.self) {
                _ = try DeviceLifecycle.initialExpiry(requested: bad, defaultLifetime: nil, callerIsAdmin: true, now: now)
            }
        }
        do {
            _ = try DeviceLifecycle.initialExpiry(requested: now.addingTimeInterval(-5), defaultLifetime: nil, callerIsAdmin: false, now: now)
        } catch {
            #expect(error.code == .invalidArgument)
            if case .invalidArgument(let field, let message) = error {
                #expect(field == "expires_at" && message.hasPrefix("expires_at must be in the future"))
            }
        }
    }

    @Test func theDefaultLifetimeAppliesAndBoundsOwners() throws {
        let day: TimeInterval = 86_400
        #expect(try DeviceLifecycle.initialExpiry(requested: nil, defaultLifetime: nil, callerIsAdmin: false, now: now) == nil)
        #expect(try DeviceLifecycle.initialExpiry(requested: nil, defaultLifetime: 0, callerIsAdmin: false, now: now) == nil, "0 is off")
        #expect(try DeviceLifecycle.initialExpiry(requested: nil, defaultLifetime: 30 * day, callerIsAdmin: false, now: now)
            == now.addingTimeInterval(30 * day))
        let sooner = now.addingTimeInterval(day)
        #expect(try DeviceLifecycle.initialExpiry(requested: sooner, defaultLifetime: 30 * day, callerIsAdmin: false, now: now) == sooner)
        let later = now.addingTimeInterval(31 * day)
        #expect(throws: MeshError.self) {
            _ = try DeviceLifecycle.initialExpiry(requested: later, defaultLifetime: 30 * day, callerIsAdmin: false, now: now)
        }
        #expect(try DeviceLifecycle.initialExpiry(requested: later, defaultLifetime: 30 * day, callerIsAdmin: true, now: now) == later,
                "an admin may go beyond the tenant's lifetime")
        for ok in [0, 3600, 86_400 * 365, 315_360_000] { #expect(try DeviceLifecycle.validateDefaultLifetime(ok) == ok) }
        for bad in [1, 3599, 315_360_001, -1] { #expect(throws: MeshError.self) { _ = try DeviceLifecycle.validateDefaultLifetime(bad) } }
    }

    @Test func aSuspendedMemberLeavesEveryNodeAndTheDNS() {
        var t = Tenant()
        t.node("hub")
        t.node("n2")
        var d = t.device("phone")
        t.node("late")
        func peers(_ viewer: String) -> [Mesh_V1_Peer] {
            var members = t.members
            members[d.id] = d
            return PeerCatalog.peers(seenBy: viewer, settings: t.settings, members: members.values)
        }
        #expect(peers("node-n2").contains { $0.id == d.id })
        #expect(PeerCatalog.isNamed(d, settings: t.settings))
        d.active = false
        for viewer in ["node-hub", "node-n2", "node-late"] {
            #expect(!peers(viewer).contains { $0.id == d.id || $0.allowedIps.contains("\(d.ipv4)/32") }, "\(viewer) holds or routes the suspended device")
        }
        #expect(!PeerCatalog.isNamed(d, settings: t.settings))
        // The mesh switched off: the same for every device, however active.
        d.active = true
        t.settings.meshEnabled = false
        #expect(!peers("node-hub").contains { $0.kind == .device })
        #expect(peers("node-hub").contains { $0.id == "node-n2" }, "nodes stay")
    }

    @Test func freeShowsTheBasicStateOnly() {
        var d = Mesh_V1_Device()
        d.online = true
        d.lastHandshakeAtMs = 42
        d.endpoint = "203.0.113.7:40000"
        d.rxBytes = 10
        d.txBytes = 20
        let free = PlanPolicy.of(.free)!.presenting(d)
        #expect(!free.perPeerStats && free.endpoint.isEmpty && free.rxBytes == 0 && free.txBytes == 0)
        #expect(free.online && free.lastHandshakeAtMs == 42, "the status pill keeps what it needs")
        for plan in [Mesh_V1_Plan.pro, .team, .enterprise] {
            let shown = PlanPolicy.of(plan)!.presenting(d)
            #expect(shown.perPeerStats && shown.endpoint == d.endpoint && shown.rxBytes == 10 && shown.txBytes == 20)
        }
    }

    @Test("RFC 3339", arguments: [
        ("2026-05-01T12:00:00Z", Int64(1_777_636_800_000)),
        ("2026-05-01T12:00:00.5Z", 1_777_636_800_500),
        ("2026-05-01T12:00:00.123456789Z", 1_777_636_800_123),
        ("2026-05-01t14:00:00+02:00", 1_777_636_800_000),
        ("2026-05-01 06:30:00-05:30", 1_777_636_800_000),
        ("2024-02-29T00:00:00z", 1_709_164_800_000),
        ("1970-01-01T00:00:00Z", 0),
    ])
    func rfc3339(text: String, ms: Int64) {
        #expect(Timestamp.parseRFC3339(text) == ms)
        #expect(Timestamp.parseRFC3339(Timestamp.iso(ms: ms)) == ms, "round trip")
    }

    @Test("not RFC 3339", arguments: [
        "", "tomorrow", "2026-05-01", "2026-05-01T12:00:00", "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z", "2025-02-29T00:00:00Z",
        "2026-05-01T24:00:00Z", "2026-05-01T12:60:00Z", "2026-05-01T12:00:60Z", "2026-05-01T12:00:00.Z", "2026-05-01T12:00:00+0200",
        "2026-05-01T12:00:00Z ", "+2026-05-01T12:00:00Z", "2026-05-01T12:00:00+24:00", "1777636800",
    ])
    func notRFC3339(text: String) {
        #expect(Timestamp.parseRFC3339(text) == nil)
    }
}
