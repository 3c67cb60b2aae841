import Foundation
import MeshDomain
import Testing

/// One-time config links: the token's shape, lifetimes, who may make one, when one opens.
@Suite("Config link rules", .timeLimit(.minutes(1)))
struct ConfigLinkRulesTests {
    let now = Date(timeIntervalSince1970: 1_800_000_000)

    @Test func tokensHaveTheirShapeAndDiffer() {
        var rng = SystemRandomNumberGenerator()
        let a = ConfigLinkFormat.make(using: &rng), b = ConfigLinkFormat.make(using: &rng)
        #expect(a != b)
        #expect(a.hasPrefix("qml_") && a.count == ConfigLinkFormat.length)
        #expect(ConfigLinkFormat.isWellFormed(a) && ConfigLinkFormat.isWellFormed(b))
        #expect(!ConfigLinkFormat.isWellFormed(String(a.dropLast())))
        #expect(!ConfigLinkFormat.isWellFormed(a + "x"))
        #expect(!ConfigLinkFormat.isWellFormed("qmp_" + a.dropFirst(4)))
        #expect(!ConfigLinkFormat.isWellFormed(String(a.prefix(10)) + "=" + a.dropFirst(11)))
        #expect(!ConfigLinkFormat.isWellFormed(""))
    }

    @Test func lifetimesStayWithinTheBounds() throws {
        let p = ConfigLinkPolicy.standard
        #expect(try p.ttl(requestedSeconds: 0) == .seconds(3600))
        #expect(try p.ttl(requestedSeconds: 60) == .seconds(60))
        #expect(try p.ttl(requestedSeconds: 604_800) == .seconds(604_800))
        for bad: UInt32 in [1, 59, 604_801, .max] {
            #expect(throws: MeshError.self) { try p.ttl(requestedSeconds: bad) }
        }
        var custom = p
        custom.defaultTTL = .seconds(900)
        #expect(try custom.ttl(requestedSeconds: 0) == .seconds(900))
    }

    @Test func aLinkOpensOnceBeforeItExpires() {
        let expires = now.addingTimeInterval(60)
        #expect(ConfigLinkPolicy.decideOpen(usedAt: nil, expiresAt: expires, now: now) == nil)
        #expect(ConfigLinkPolicy.decideOpen(usedAt: now, expiresAt: expires, now: now) == .used)
        #expect(ConfigLinkPolicy.decideOpen(usedAt: nil, expiresAt: expires, now: expires) == .expired)
        #expect(ConfigLinkPolicy.decideOpen(usedAt: nil, expiresAt: expires, now: expires.addingTimeInterval(1)) == .expired)
        // Used and expired: it was used (the more useful answer).
        #expect(ConfigLinkPolicy.decideOpen(usedAt: now, expiresAt: expires, now: expires.addingTimeInterval(1)) == .used)
        for r in [ConfigLinkPolicy.Refusal.used, .expired] {
            guard case .gone(let m) = ConfigLinkPolicy.error(r) else { Issue.record("\(r) is not gone"); continue }
            #expect(m.contains(r == .used ? "already used" : "expired"))
            #expect(ConfigLinkPolicy.error(r).busCode == 410)
        }
    }

    @Test func onlyAdminsMakeLinksForOthers() throws {
        let me = UUID(), other = UUID()
        try ConfigLinkPolicy.checkCreate(callerIsAdmin: false, caller: me, target: me)
        try ConfigLinkPolicy.checkCreate(callerIsAdmin: true, caller: me, target: other)
        #expect(throws: MeshError.notFound("no such user")) { try ConfigLinkPolicy.checkCreate(callerIsAdmin: false, caller: me, target: other) }
    }
}
