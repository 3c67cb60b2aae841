import Foundation
import Logging
import MeshBus
import MeshTestSupport
import ServiceLifecycle
import Testing

/// A domain error for the tests, the way services define theirs.
struct TeapotError: BusServiceError {
    var serviceErrorCode: Int { 418 }
    var serviceErrorMessage: String { "short and stout" }
    var serviceErrorBody: [UInt8] { Array("tea".utf8) }
}

/// Runs `body` with a service running on `connection`, then shuts the service down gracefully.
func withService<T>(_ service: BusService, _ body: () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await service.run() }
        await service.waitUntilReady()
        do {
            let v = try await body()
            group.cancelAll()
            return v
        } catch {
            group.cancelAll()
            throw error
        }
    }
}

@Suite(.timeLimit(.minutes(5)), .enabled(if: TestEnvironment.hasInfra, "\(TestEnvironment.skipReason)"))
struct BusTests {
    let subjectPrefix = "test.\(Nuid.next())"
    /// What a request may take when the test is not about timing: the whole suite shares two cores.
    static let generous: Duration = .seconds(60)

    @Test func requestReplyWithHeaders() async throws {
        let bus = try await TestEnvironment.connectBus("t-req")
        let svc = try BusService(connection: bus, name: "echo", version: "1.0.0", endpoints: [
            ServiceEndpoint(name: "echo", subject: "\(subjectPrefix).echo") { req in
                Array("echo:".utf8) + req.payload + Array(":\(req.headers["X-Test"] ?? "-")".utf8)
            },
        ], logger: TestEnvironment.logger("t"))
        try await withService(svc) {
            var h = BusHeaders()
            h["X-Test"] = "yes"
            let reply = try await bus.request("\(subjectPrefix).echo", Array("hi".utf8), headers: h, timeout: Self.generous)
            #expect(String(decoding: reply.payload, as: UTF8.self) == "echo:hi:yes")
        }
        await bus.close()
    }

    @Test func queueGroupSpreadsLoad() async throws {
        let bus = try await TestEnvironment.connectBus("t-q")
        let a = try await TestEnvironment.connectBus("t-q-a")
        let b = try await TestEnvironment.connectBus("t-q-b")
        let subject = "\(subjectPrefix).work"
        func responder(_ conn: BusConnection, _ tag: String) throws -> BusService {
            try BusService(connection: conn, name: "worker", version: "1.0.0", endpoints: [
                ServiceEndpoint(name: "work", subject: subject) { _ in Array(tag.utf8) },
            ], logger: TestEnvironment.logger("t"))
        }
        let sa = try responder(a, "a"), sb = try responder(b, "b")
        let counts = try await withService(sa) {
            try await withService(sb) {
                var counts: [String: Int] = [:]
                for _ in 0..<200 {
                    let r = try await bus.request(subject, [], timeout: Self.generous)
                    counts[String(decoding: r.payload, as: UTF8.self), default: 0] += 1
                }
                return counts
            }
        }
        #expect(counts.values.reduce(0, +) == 200)
        // Random spread: each responder gets a fair share (binomial, p=0.5, n=200: P(<50) is ~1e-13).
        #expect((counts["a"] ?? 0) >= 50, "counts: \(counts)")
        #expect((counts["b"] ?? 0) >= 50, "counts: \(counts)")
        await bus.close(); await a.close(); await b.close()
    }

    @Test func noRespondersIsAnError() async throws {
        let bus = try await TestEnvironment.connectBus("t-nr")
        await #expect(throws: BusError.noResponders(subject: "\(subjectPrefix).nobody")) {
            _ = try await bus.request("\(subjectPrefix).nobody", Array("x".utf8), timeout: .seconds(2))
        }
        await bus.close()
    }

    @Test func timeoutWhenResponderIsSilent() async throws {
        let bus = try await TestEnvironment.connectBus("t-to")
        let silent = try bus.subscribe("\(subjectPrefix).silent")
        try await bus.flush()
        let subject = "\(subjectPrefix).silent"
        // The request's own 200 ms timeout ends it; the outer deadline only keeps a regression from hanging.
        let outcome = try await withDeadline(.seconds(60), "a request with a 200 ms timeout ends") {
            do {
                _ = try await bus.request(subject, [], timeout: .milliseconds(200))
                return "answered"
            } catch {
                return "\(error)"
            }
        }
        #expect(outcome == "\(BusError.timeout(subject: subject))")
        silent.unsubscribe()
        await bus.close()
    }

    @Test func cancellationEndsTheRequest() async throws {
        let bus = try await TestEnvironment.connectBus("t-cancel")
        let silent = try bus.subscribe("\(subjectPrefix).slow")
        try await bus.flush()
        var arrived = silent.makeAsyncIterator()
        let task = Task { try await bus.request("\(subjectPrefix).slow", [], timeout: .seconds(600)) }
        // Cancel once the request is in flight: the responder has it.
        _ = try await next(&arrived, "the request reaches the silent responder")
        task.cancel()
        let result = try await withDeadline(.seconds(60), "a cancelled request ends") { await task.result }
        #expect(throws: CancellationError.self) { try result.get() }
        silent.unsubscribe()
        await bus.close()
    }

    @Test func serviceErrorsTravelInHeadersAndStatsCountThem() async throws {
        let bus = try await TestEnvironment.connectBus("t-err")
        let svc = try BusService(connection: bus, name: "flaky", version: "2.1.0-rc.1", endpoints: [
            ServiceEndpoint(name: "maybe", subject: "\(subjectPrefix).maybe") { req in
                if req.payload == Array("fail".utf8) { throw TeapotError() }
                if req.payload == Array("crash".utf8) { throw CocoaError(.fileNoSuchFile) }
                return Array("ok".utf8)
            },
        ], logger: TestEnvironment.logger("t"))
        try await withService(svc) {
            for _ in 0..<3 { _ = try await bus.request("\(subjectPrefix).maybe", Array("ok".utf8), timeout: Self.generous) }
            do {
                _ = try await bus.request("\(subjectPrefix).maybe", Array("fail".utf8), timeout: Self.generous)
                Issue.record("expected an error")
            } catch BusError.service(let code, let description, let body) {
                #expect(code == 418)
                #expect(description == "short and stout")
                #expect(body == Array("tea".utf8))
            }
            do {
                _ = try await bus.request("\(subjectPrefix).maybe", Array("crash".utf8), timeout: Self.generous)
                Issue.record("expected an error")
            } catch BusError.service(let code, let description, _) {
                #expect(code == 500)
                #expect(description == "internal error")
            }
            // $SRV.STATS for this instance.
            let raw = try await bus.request("$SRV.STATS.flaky.\(svc.id)", [], timeout: Self.generous)
            let stats = try JSONDecoder().decode(BusService.StatsResponse.self, from: Data(raw.payload))
            #expect(stats.type == "io.nats.micro.v1.stats_response")
            #expect(stats.version == "2.1.0-rc.1")
            let ep = try #require(stats.endpoints.first)
            #expect(ep.num_requests == 5)
            #expect(ep.num_errors == 2)
            #expect(ep.last_error == "500:internal error")
            #expect(ep.queue_group == "q")
            #expect(ep.processing_time > 0)
            #expect(ep.average_processing_time == ep.processing_time / 5)
        }
        await bus.close()
    }

    @Test func pingAndInfoDiscoverEveryService() async throws {
        let bus = try await TestEnvironment.connectBus("t-ping")
        let name1 = "disc-\(Nuid.short())", name2 = "disc-\(Nuid.short())"
        let s1 = try BusService(connection: bus, name: name1, version: "1.2.3", endpoints: [
            ServiceEndpoint(name: "a", subject: "\(subjectPrefix).a") { _ in [] },
        ], logger: TestEnvironment.logger("t"))
        let s2 = try BusService(connection: bus, name: name2, version: "0.9.0", endpoints: [
            ServiceEndpoint(name: "b", subject: "\(subjectPrefix).b.*", queueGroup: nil) { _ in [] },
        ], logger: TestEnvironment.logger("t"))
        try await withService(s1) {
            try await withService(s2) {
                // $SRV.PING goes to every service: collect replies on our own inbox.
                let inbox = "_INBOX.ping.\(Nuid.next())"
                let sub = try bus.subscribe(inbox)
                try bus.publish("$SRV.PING", [], reply: inbox)
                var seen: [String: String] = [:]
                var replies = sub.makeAsyncIterator()
                while seen[name1] == nil || seen[name2] == nil {
                    guard let m = try await next(&replies, "$SRV.PING answers from both services (got \(seen))") else { break }
                    let p = try JSONDecoder().decode(BusService.PingResponse.self, from: Data(m.payload))
                    #expect(p.type == "io.nats.micro.v1.ping_response")
                    seen[p.name] = p.version
                }
                #expect(seen[name1] == "1.2.3")
                #expect(seen[name2] == "0.9.0")

                let info = try JSONDecoder().decode(BusService.InfoResponse.self,
                                                    from: Data(try await bus.request("$SRV.INFO.\(name2)", []).payload))
                #expect(info.type == "io.nats.micro.v1.info_response")
                #expect(info.id == s2.id)
                #expect(info.endpoints.map(\.subject) == ["\(subjectPrefix).b.*"])
                #expect(info.endpoints.first?.queue_group == "")
            }
        }
        await bus.close()
    }

    @Test func subscriptionIsAnAsyncSequence() async throws {
        let bus = try await TestEnvironment.connectBus("t-sub")
        let sub = try bus.subscribe("\(subjectPrefix).events.>")
        try await bus.flush()
        for i in 0..<5 { try bus.publish("\(subjectPrefix).events.\(i)", [UInt8(i)]) }
        let got = try await collect(5, from: sub, "five published messages").map { $0.payload[0] }
        #expect(got == [0, 1, 2, 3, 4])
        await bus.close()
    }

    @Test func invalidSubjectsAreRejectedLocally() async throws {
        let bus = try await TestEnvironment.connectBus("t-inv")
        #expect(throws: BusError.self) { try bus.publish("bad subject", []) }
        #expect(throws: BusError.self) { try bus.publish("a..b", []) }
        #expect(throws: BusError.self) { try bus.publish("a.*", []) }
        #expect(throws: BusError.self) { _ = try bus.subscribe("a.>.b") }
        await bus.close()
    }
}

@Suite(.timeLimit(.minutes(5)), .enabled(if: TestEnvironment.hasInfra, "\(TestEnvironment.skipReason)"), .serialized)
struct BusReconnectTests {
    @Test func reconnectsAndDeliversPublishesMadeDuringTheOutage() async throws {
        let infra = try PrivateInfra(name: "reconnect")
        defer { infra.shutdown() }
        // One connection both subscribes and publishes: after a reconnect nats.c re-sends its
        // subscriptions before the publishes it buffered, so delivery does not depend on which of
        // two connections happens to reconnect first.
        let bus = try await TestEnvironment.connectBus("t-outage", url: infra.natsURL)
        let other = try await TestEnvironment.connectBus("t-other", url: infra.natsURL)
        let events = bus.events()
        let sub = try bus.subscribe("outage.test")
        try await bus.flush()
        // Delivered before the server stops: core NATS is at most once, so a message the server has
        // not yet passed on when it is killed may be lost, which is not what this test is about.
        var messages = sub.makeAsyncIterator()
        try bus.publish("outage.test", Array("before".utf8))
        #expect(try await next(&messages, "the message published before the outage")?.payload == Array("before".utf8))

        try infra.stopNats()
        var it = events.makeAsyncIterator()
        #expect(try await next(&it, "the disconnected event") == .disconnected)
        #expect(!bus.isConnected)
        // Published while no server is up: buffered by the client.
        try bus.publish("outage.test", Array("during".utf8))
        try infra.start()
        #expect(try await next(&it, "the reconnected event") == .reconnected)

        let during = try await next(&messages, "the message published during the outage")
        #expect(during.map { String(decoding: $0.payload, as: UTF8.self) } == "during")
        // Requests work again on a connection that lived through the outage.
        try await other.waitUntilConnected(timeout: .seconds(60))
        let echo = try other.subscribe("outage.echo")
        try await other.flush()
        try bus.publish("outage.echo", Array("again".utf8))
        var it2 = echo.makeAsyncIterator()
        #expect(try await next(&it2, "the message published after the outage")?.payload == Array("again".utf8))
        await bus.close()
        await other.close()
    }

    @Test func connectSucceedsBeforeTheServerIsUp() async throws {
        let infra = try PrivateInfra(name: "late")
        defer { infra.shutdown() }
        try infra.stopNats()
        let bus = try await TestEnvironment.connectBus("t-late", url: infra.natsURL)
        #expect(!bus.isConnected)
        try infra.start()
        try await bus.waitUntilConnected(timeout: .seconds(60))
        #expect(bus.isConnected)
        await bus.close()
    }
}
