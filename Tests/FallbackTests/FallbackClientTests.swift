import Foundation
import Logging
import MeshBus
import MeshDNS
import MeshHTTPS
import MeshNet
import MeshPKI
import MeshTestSupport
import RelayClient
import Testing

/// The fallback client against real parts on loopback addresses (no namespaces): an HTTP server
/// standing for the gateway (python3 http.server), the relay as a TCP proxy process the test cuts and
/// restores, two nodes' HTTPS fronts with leaves from a tenant CA, and the mesh DNS server serving
/// their names. `FallbackE2ETests` runs the same over WireGuard with the real services.
@Suite(.enabled(if: TestEnvironment.runs(root: true, tools: ["python3"]), "needs root (binds port 53 on loopback addresses) and python3"), .serialized, .timeLimit(.minutes(3)))
struct FallbackClientTests {
    init() throws { try TestEnvironment.require(root: true, tools: ["python3"]) }

    /// The parts of one run.
    final class Rig: @unchecked Sendable {
        let base: String
        let nodeIPs: [String]
        let dnsIP: String
        let ca: TenantAuthority
        let upstream: ManagedProcess
        let upstreamPort: Int
        let relay: TestRelay
        let fronts: [HTTPSFront]
        let dns: MeshDNSServer
        let logger = TestEnvironment.logger("fallback")
        let out = TestEnvironment.outputDir("fallback")

        init() async throws {
            // A /24 of its own on loopback for this run: 127.<random>.<random>.x.
            base = "127.\(Int.random(in: 100...250)).\(Int.random(in: 1...250))"
            dnsIP = "\(base).53"
            nodeIPs = ["\(base).11", "\(base).12"]
            ca = try TenantAuthority.create(tenantID: "tenant-a", tenantName: "A")
            // The API beside the nodes: a real HTTP server with the paths the client calls.
            let root = out.appendingPathComponent("www-\(Nuid.short())")
            try FileManager.default.createDirectory(at: root.appendingPathComponent("api/mesh"), withIntermediateDirectories: true)
            try Data("ok\n".utf8).write(to: root.appendingPathComponent("healthz"))
            try Data("{\"devices\":[]}\n".utf8).write(to: root.appendingPathComponent("api/mesh/devices"))
            upstreamPort = try freeLoopbackPort()
            upstream = try ManagedProcess(name: "upstream-\(Nuid.short())", executable: TestEnvironment.which("python3"),
                                          arguments: ["-m", "http.server", "--bind", "127.0.0.1", "--directory", root.path, "\(upstreamPort)"],
                                          logDir: out)
            relay = TestRelay(listenHost: "127.0.0.1", listenPort: try freeLoopbackPort(), target: ("127.0.0.1", upstreamPort), logDir: out)
            try await relay.restore()
            var fronts: [HTTPSFront] = []
            for (i, ip) in nodeIPs.enumerated() {
                let key = ServerKey()
                let leaf = try ca.issueServer(publicKeyDER: key.publicKeyDER, dnsNames: ["node-\(i).quazzar.mesh"], ipAddresses: [ip])
                let front = HTTPSFront(listen: [(ip, 8443)], upstream: ("127.0.0.1", upstreamPort), logger: logger)
                try front.install(certificateChainPEM: leaf.pemText + "\n" + ca.certificatePEM, privateKeyPEM: key.privateKeyPEM)
                try await front.start()
                fronts.append(front)
            }
            self.fronts = fronts
            let zone = MeshDNSZone(configuration: try MeshDNSZoneConfiguration(origin: "quazzar.mesh", nameServerAddresses: []), logger: logger)
            for (i, ip) in nodeIPs.enumerated() {
                _ = zone.upsert(MeshDNSRecord(name: "node-\(i)", addresses: [IPAddress(ip)!]), revision: UInt32(i + 1))
            }
            _ = zone.upsert(MeshDNSRecord(name: "impostor", addresses: [IPAddress(nodeIPs[1])!]), revision: 9)
            dns = MeshDNSServer(zone: zone, configuration: MeshDNSServerConfiguration(listenAddresses: [IPAddress(dnsIP)!], port: 53, serveTCP: false),
                                logger: logger)
            try await waitForUpstream()
        }

        func waitForUpstream() async throws {
            for _ in 0..<200 {
                if await (try? run("/usr/bin/env", ["curl", "-s", "-o", "/dev/null", "--max-time", "1", "http://127.0.0.1:\(upstreamPort)/healthz"]).status) == 0 { return }
                try await Task.sleep(for: .milliseconds(50))
            }
            throw TestSetupError.failed("upstream did not start: \(upstream.log())")
        }

        func client(caPEM: String? = nil, urls: [String]? = nil, policy: FallbackPolicy = FallbackPolicy()) throws -> FallbackClient {
            try FallbackClient(relay: URL(string: relay.url)!,
                               meshURLs: (urls ?? nodeIPs.indices.map { "https://node-\($0).quazzar.mesh:8443" }).map { URL(string: $0)! },
                               caCertificatePEM: caPEM ?? ca.certificatePEM, resolver: MeshResolver(servers: [(dnsIP, 53)]), policy: policy,
                               logger: logger)
        }

        func stop() async {
            for f in fronts { await f.stop() }
            await relay.cut()
            await upstream.kill9()
        }
    }

    /// Runs `body` while the rig's DNS server runs.
    func withRig(_ body: @escaping @Sendable (Rig) async throws -> Void) async throws {
        let rig = try await Rig()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await rig.dns.run() }
            for _ in 0..<100 where !rig.dns.status().serving { try await Task.sleep(for: .milliseconds(20)) }
            do {
                try await body(rig)
            } catch {
                group.cancelAll()
                await rig.stop()
                throw error
            }
            group.cancelAll()
        }
        await rig.stop()
    }

    /// Runs `body` while the client's relay probe runs.
    func running(_ client: FallbackClient, _ body: () async throws -> Void) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await client.run() }
            do {
                try await body()
            } catch {
                group.cancelAll()
                throw error
            }
            group.cancelAll()
        }
    }

    @Test func theClientFailsOverToTheMeshAndBack() async throws {
        try await withRig { rig in
            let client = try rig.client()
            try await running(client) {
                var answers: [(at: ContinuousClock.Instant, path: FallbackPath, failedBefore: String)] = []
                var failures: [String] = []
                func tick(_ n: Int) async {
                    for _ in 0..<n {
                        do {
                            let r = try await client.send(FallbackRequest(path: "/api/mesh/devices"))
                            #expect(r.status == 200 && String(decoding: r.body, as: UTF8.self).contains("devices"))
                            answers.append((.now, r.path, r.failedBefore.map { "\($0.path): \($0.error)" }.joined(separator: "; ")))
                        } catch {
                            failures.append("\(error)")
                        }
                        try? await Task.sleep(for: .milliseconds(50))
                    }
                }
                await tick(10)
                #expect(client.mode == .relay, "\(client.transitions.map { ($0.mode, $0.reason) })")
                #expect(answers.allSatisfy { $0.path == .relay }, "answered elsewhere: \(answers.filter { $0.path != .relay }.map { ($0.path, $0.failedBefore) })")

                let cutAt = ContinuousClock.now
                await rig.relay.cut()
                await tick(20)
                #expect(client.mode == .mesh, "the relay is degraded after the cut")
                let firstMesh = answers.first { $0.at > cutAt && $0.path != .relay }
                #expect(firstMesh != nil, "answers come over the mesh after the cut")

                let restoredAt = ContinuousClock.now
                try await rig.relay.restore()
                // Recovery needs `recoverAfter` good probes, one per probe interval: wait for it with a deadline.
                let deadline = ContinuousClock.now + .seconds(20)
                while client.mode != .relay, ContinuousClock.now < deadline { await tick(1) }
                #expect(client.mode == .relay, "the client returns to the relay once it answers again")
                await tick(5)
                let firstRelayAgain = answers.first { $0.at > restoredAt && $0.path == .relay }
                #expect(firstRelayAgain != nil)
                #expect(failures.isEmpty, "every request got an answer: \(failures)")
                let modes = client.transitions.map(\.mode)
                #expect(modes == [.mesh, .relay], "\(client.transitions.map { ($0.mode, $0.reason) })")
                if let firstMesh, let firstRelayAgain {
                    print("fallback loopback: failover \(firstMesh.at - cutAt) (cut to first mesh answer), "
                          + "recovery \(firstRelayAgain.at - restoredAt) (restore to first relay answer), "
                          + "\(answers.count) answers, \(failures.count) failures")
                }
            }
        }
    }

    @Test func aStalledRelayTimesOutAndTheClientFailsOver() async throws {
        try await withRig { rig in
            let client = try rig.client()
            try await running(client) {
                var answers: [(at: ContinuousClock.Instant, path: FallbackPath)] = []
                var failures: [String] = []
                func tick() async {
                    do {
                        let r = try await client.send(FallbackRequest(path: "/api/mesh/devices"))
                        answers.append((.now, r.path))
                    } catch {
                        failures.append("\(error)")
                    }
                    try? await Task.sleep(for: .milliseconds(50))
                }
                for _ in 0..<5 { await tick() }
                #expect(client.mode == .relay)
                // The relay accepts connections but answers nothing: each request waits out relayTimeout.
                let stalledAt = ContinuousClock.now
                rig.relay.stall()
                let deadline = ContinuousClock.now + .seconds(20)
                while client.mode == .relay, ContinuousClock.now < deadline { await tick() }
                #expect(client.mode == .mesh)
                for _ in 0..<5 { await tick() }
                let firstMesh = answers.first { $0.at > stalledAt && $0.path != .relay }
                #expect(firstMesh != nil)
                let resumedAt = ContinuousClock.now
                rig.relay.resume()
                while client.mode != .relay, ContinuousClock.now < deadline + .seconds(20) { await tick() }
                #expect(client.mode == .relay)
                #expect(failures.isEmpty, "every request got an answer: \(failures)")
                let reasons = client.transitions.map(\.reason)
                #expect(reasons.first?.contains("timed out") == true, "\(reasons)")
                if let firstMesh, let back = client.transitions.last, back.mode == .relay {
                    print("fallback loopback (stalled relay): failover \(firstMesh.at - stalledAt) (stall to first mesh answer), "
                          + "recovery \(back.at - resumedAt) (resume to switching back)")
                }
            }
        }
    }

    @Test func anotherCAOrAnotherNameIsRefused() async throws {
        try await withRig { rig in
            // Relay down from the start, so every request goes to the mesh.
            await rig.relay.cut()
            let other = try TenantAuthority.create(tenantID: "tenant-b", tenantName: "B")
            let strangers = try rig.client(caPEM: other.certificatePEM)
            do throws(FallbackError) {
                _ = try await strangers.send(FallbackRequest(path: "/healthz"))
                Issue.record("a node whose CA is not the one trusted answered")
            } catch {
                #expect(error.attempts.contains { if case .tls = $0.error { true } else { false } }, "\(error)")
            }
            // The right CA, but a name the certificate does not hold: "impostor" resolves to node-1.
            let wrongName = try rig.client(urls: ["https://impostor.quazzar.mesh:8443"])
            do throws(FallbackError) {
                _ = try await wrongName.send(FallbackRequest(path: "/healthz"))
                Issue.record("a certificate without the asked name was accepted")
            } catch {
                #expect(error.attempts.contains { if case .tls = $0.error { true } else { false } }, "\(error)")
            }
            // And the right CA and name answer.
            let good = try rig.client()
            let r = try await good.send(FallbackRequest(path: "/healthz"))
            #expect(r.status == 200 && r.path == .mesh("https://node-0.quazzar.mesh:8443"))
        }
    }
}
