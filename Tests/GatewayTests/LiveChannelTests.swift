import AsyncHTTPClient
import Foundation
import GatewayCore
import Hummingbird
import HummingbirdTesting
import MeshDomain
import MeshProto
import MeshTestSupport
import NIOCore
import Synchronization
import Testing

/// One open `GET /api/mesh/events` stream, read by a real HTTP client as it arrives.
final class LiveReader: Sendable {
    struct Event: Sendable {
        let name: String
        let data: String
        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(data.utf8))) as? [String: Any] ?? [:] }
        var deviceIDs: [String] { (json["devices"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String } }
    }

    /// What the stream delivered so far, and whether it ended.
    final class Received: Sendable {
        let events = Mutex<[Event]>([])
        let ended = Mutex(false)
    }

    let status: Int
    let contentType: String
    let received: Received
    let task: Task<Void, Never>?

    init(port: Int, token: String?) async throws {
        let received = Received()
        self.received = received
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/api/mesh/events")
        request.headers.add(name: "Accept", value: "text/event-stream")
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        status = Int(response.status.code)
        contentType = response.headers.first(name: "Content-Type") ?? ""
        guard status == 200 else {
            task = nil
            return
        }
        let events = received
        task = Task {
            var buffer = ""
            do {
                for try await chunk in response.body {
                    buffer += String(buffer: chunk)
                    while let range = buffer.range(of: "\n\n") {
                        let block = String(buffer[..<range.lowerBound])
                        buffer = String(buffer[range.upperBound...])
                        var name = "message", data: [String] = []
                        for line in block.split(separator: "\n") {
                            if line.hasPrefix("event: ") { name = String(line.dropFirst(7)) }
                            if line.hasPrefix("data: ") { data.append(String(line.dropFirst(6))) }
                        }
                        if !data.isEmpty { events.events.withLock { $0.append(Event(name: name, data: data.joined(separator: "\n"))) } }
                    }
                }
            } catch {}
            events.ended.withLock { $0 = true }
        }
    }

    /// The first event (from index `after` on) that matches, waiting up to `timeout`.
    func next(after: Int = 0, timeout: Duration = .seconds(20), _ match: @escaping (Event) -> Bool) async throws -> (Int, Event) {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let found = received.events.withLock { list -> (Int, Event)? in
                guard after < list.count else { return nil }
                for i in after..<list.count where match(list[i]) { return (i, list[i]) }
                return nil
            }
            if let found { return found }
            try await Task.sleep(for: .milliseconds(20))
        }
        Issue.record("no matching live event within \(timeout); got \(received.events.withLock { $0.map { "\($0.name) \($0.data)" } })")
        throw CancellationError()
    }

    var all: [Event] { received.events.withLock { $0 } }
    var ended: Bool { received.ended.withLock { $0 } }

    func close() async {
        task?.cancel()
        await task?.value
    }
}

extension GatewayTests {
    /// The live channel over real HTTP, fed by the real ProvisionSvc, FanoutSvc and bus: the list on
    /// connect, a created device on every page that may see it, a node's handshake report as a
    /// status change (to its owner and admins only, through two gateway replicas), a device leaving
    /// its online window, a reconnect that misses nothing, and the same credentials as the API.
    @Test func liveChannelPushesChangesAndStatusPerUser() async throws {
        let f = try await Fixture.start("live-push", plan: .team, environment: ["MESH_RATE_LIMIT": "0", "MESH_ONLINE_WINDOW_SECONDS": "4"],
                                        realFanout: true) { $0.liveTick = .seconds(1) }
        let app = try await f.application()
        let replica = try await f.application()
        try await app.test(.live) { client in
            try await replica.test(.live) { replicaClient in
                let port = try #require(client.port), replicaPort = try #require(replicaClient.port)

                // The same credentials as the API.
                let anonymous = try await client.send(.get, "/api/mesh/events")
                #expect(anonymous.status == 401 && anonymous.errorCode == "unauthenticated", "\(anonymous.text)")
                let expired = try await client.send(.get, "/api/mesh/events", token: f.tokens.expired)
                #expect(expired.status == 401, "\(expired.text)")
                let node = try await client.send(.get, "/api/mesh/events", token: f.tokens.node)
                #expect(node.status == 403, "\(node.text)")

                let a = try await LiveReader(port: port, token: f.tokens.ownerA)
                let aOnReplica = try await LiveReader(port: replicaPort, token: f.tokens.ownerA)
                let b = try await LiveReader(port: port, token: f.tokens.ownerB)
                let admin = try await LiveReader(port: replicaPort, token: f.tokens.admin)
                #expect(a.status == 200 && a.contentType.hasPrefix("text/event-stream"), "\(a.status) \(a.contentType)")
                for r in [a, aOnReplica, b, admin] {
                    let (_, first) = try await r.next { $0.name == "devices" }
                    #expect(first.deviceIDs.isEmpty)
                }

                // A device created by owner A reaches A (on both replicas) and the admin.
                let created = try await client.send(.post, "/api/mesh/devices", token: f.tokens.ownerA, body: deviceBody("A's phone", type: "iphone"))
                #expect(created.status == 201, "\(created.text)")
                let id = try #require(created.json["id"] as? String)
                let (aAt, _) = try await a.next { $0.name == "devices" && $0.deviceIDs == [id] }
                let (replicaAt, _) = try await aOnReplica.next { $0.name == "devices" && $0.deviceIDs == [id] }
                let (adminAt, _) = try await admin.next { $0.name == "devices" && $0.deviceIDs.contains(id) }
                _ = try await b.next { $0.name == "mesh" }

                // The node reports the device's first handshake, as NodeApplier does.
                let listed = try await f.cp.client.listDevices(caller: f.admin)
                let key = try #require(listed.first { $0.id == id }?.publicKey)
                var report = Mesh_V1_HandshakeReport()
                report.tenantID = f.tenant.id
                report.nodeID = f.node.id
                report.observedAtMs = Date().unixMilliseconds
                var peer = Mesh_V1_PeerStats()
                peer.publicKey = key
                peer.lastHandshakeMs = Date().unixMilliseconds
                peer.endpoint = "203.0.113.50:41000"
                report.peers = [peer]
                try f.cp.bus.publish(MeshSubjects.handshakeReport(tenant: f.tenant.id, node: f.node.id), try report.serializedBytes())
                func online(_ e: LiveReader.Event) -> Bool {
                    e.name == "device" && e.json["id"] as? String == id && e.json["online"] as? Bool == true
                        && e.json["endpoint"] as? String == "203.0.113.50:41000"
                }
                let (aOnline, _) = try await a.next(after: aAt, online)
                _ = try await aOnReplica.next(after: replicaAt, online)
                _ = try await admin.next(after: adminAt, online)

                // Owner B's page learns nothing of A's device: B's next list (its own new device)
                // comes after the status event was handed to every stream of the tenant.
                let own = try await client.send(.post, "/api/mesh/devices", token: f.tokens.ownerB, body: deviceBody("B's laptop", type: "laptop"))
                let ownID = try #require(own.json["id"] as? String)
                _ = try await b.next { $0.name == "devices" && $0.deviceIDs == [ownID] }
                #expect(!b.all.contains { $0.data.contains(id) }, "owner B saw owner A's device")
                #expect(!a.all.contains { $0.data.contains(ownID) }, "owner A saw owner B's device")

                // Without another handshake the device leaves its online window (4 s here): the
                // stream reads the list again and shows it offline.
                _ = try await a.next(after: aOnline, timeout: .seconds(30)) { e in
                    e.name == "devices" && (e.json["devices"] as? [[String: Any]])?.first { $0["id"] as? String == id }?["online"] as? Bool == false
                }

                // A dropped page misses nothing: what changed meanwhile is in the list it gets on reconnect.
                await a.close()
                let deleted = try await client.send(.delete, "/api/mesh/devices/\(id)", token: f.tokens.admin)
                #expect(deleted.status == 204)
                let another = try await client.send(.post, "/api/mesh/devices", token: f.tokens.ownerA, body: deviceBody("A's laptop", type: "laptop"))
                let anotherID = try #require(another.json["id"] as? String)
                // Wait until the change has gone through FanoutSvc (the other page of A sees it).
                _ = try await aOnReplica.next { $0.name == "devices" && $0.deviceIDs == [anotherID] }
                let again = try await LiveReader(port: port, token: f.tokens.ownerA)
                let (_, fresh) = try await again.next { $0.name == "devices" }
                #expect(fresh.deviceIDs == [anotherID])

                for r in [again, aOnReplica, b, admin] { await r.close() }
            }
        }
        try await f.stop()
    }

    /// A stream whose credential is refused on a later list read ends with an `ended` event (401),
    /// and a stream ends by itself after its lifetime, so the page reconnects and is checked again.
    @Test func liveStreamEndsWhenTheUserIsRemovedAndAfterItsLifetime() async throws {
        let f = try await Fixture.start("live-end", plan: .team, environment: ["MESH_RATE_LIMIT": "0"], realFanout: true) {
            $0.liveTick = .seconds(1)
            $0.liveMaxDuration = .seconds(3)
        }
        let app = try await f.application()
        var long = f.configuration
        long.liveMaxDuration = .seconds(300)
        let longLived = try await f.application(configuration: long)
        try await app.test(.live) { client in
            let port = try #require(client.port)
            // The lifetime: the stream ends on its own (the reader sees the end of the body).
            let short = try await LiveReader(port: port, token: f.tokens.ownerA)
            _ = try await short.next { $0.name == "devices" }
            let deadline = ContinuousClock.now + .seconds(30)
            while !short.ended, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
            #expect(short.ended, "the stream did not end after its lifetime")
            await short.close()
        }
        try await longLived.test(.live) { client in
            let port = try #require(client.port)
            // Owner B is removed by the admin: B's open stream is told so at the next list read.
            let b = try await LiveReader(port: port, token: f.tokens.ownerB)
            _ = try await b.next { $0.name == "devices" }
            let removed = try await client.send(.delete, "/api/mesh/users/\(f.ownerB.userID)?devices=delete", token: f.tokens.admin)
            #expect(removed.status == 200, "\(removed.text)")
            // Any change of the tenant makes every stream read its list again.
            let created = try await client.send(.post, "/api/mesh/devices", token: f.tokens.ownerA, body: deviceBody("trigger"))
            #expect(created.status == 201)
            let (_, ended) = try await b.next { $0.name == "ended" }
            #expect(ended.json["status"] as? Int == 401, "\(ended.data)")
            await b.close()
        }
        try await f.stop()
    }
}
