import Foundation
import MeshAuth
import MeshBus
import MeshClient
import MeshDomain
import MeshPKI
import MeshProto
import MeshTestSupport
import Testing

/// The phone fallback end to end with the real services: the control plane, two nodes running
/// NodeApplier with wireguard-go in namespaces (their HTTPS fronts relaying to a real Gateway), a phone
/// paired through `POST /cp/api/v1/mesh/devices` and brought up in its own namespace from the config
/// it was given, the relay as a TCP proxy the test cuts and restores, and `meshctl fallback` running
/// in the phone's namespace.
@Suite(.enabled(if: TestEnvironment.runs(root: true, infra: true, tools: ["wireguard-go", "wg", "ip", "curl"]), "needs root, wireguard-go, curl, nats-server and PostgreSQL"), .serialized,
       .timeLimit(.minutes(6)))
struct FallbackE2ETests {
    init() throws { try TestEnvironment.require(root: true, infra: true, tools: ["wireguard-go", "wg", "ip", "curl"]) }

    static let secret = "fallback-tests-secret-0123456789abcdef"

    func curl(_ args: [String], in ns: NetNamespace? = nil) throws -> (status: Int32, output: String, stdout: String) {
        let base = ["curl", "-sS", "--max-time", "10"] + args
        if let ns { return try ns.tryExec(base) }
        return try run("/usr/bin/env", base)
    }

    @Test func aPairedPhoneReachesTheAPIOverTheMeshWhenTheRelayIsCut() async throws {
        let lab = try await MeshLab.start("fb")
        let out = TestEnvironment.outputDir("fallback-e2e")
        let gwPort = try freeLoopbackPort()
        let gwAddress = "\(lab.bridge.host):\(gwPort)"
        let nodeEnv = ["MESH_NODE_HTTPS_PORT": "8443", "MESH_NODE_HTTPS_UPSTREAM": gwAddress]
        let alpha = try await lab.addNode("alpha", environment: nodeEnv)
        let beta = try await lab.addNode("beta", environment: nodeEnv)
        let gateway = try ManagedProcess(
            name: "Gateway-fb-\(Nuid.short())", executable: TestEnvironment.binDir.appendingPathComponent("Gateway").path,
            environment: ["MESH_NATS_URL": lab.cp.nats.url, "MESH_GATEWAY_ADDRESS": gwAddress, "MESH_JWT_SECRET": Self.secret,
                          "MESH_INSTANCE": "gateway-fb", "MESH_LOG_LEVEL": "warning"],
            logDir: out)
        var up = false
        for _ in 0..<200 where !up && gateway.isRunning {
            up = (try? curl(["-o", "/dev/null", "-w", "%{http_code}", "http://\(gwAddress)/healthz"]).stdout) == "200"
            if !up { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(up, "gateway did not come up: \(gateway.log().suffix(2000))")
        let minter = try await TokenMinter(keys: try JWTKeyMaterial(hmacSecret: Array(Self.secret.utf8)))
        let token = try await minter.user(tenantID: lab.admin.tenantID, userID: lab.admin.userID, role: lab.admin.role)

        // The pairing call: config, QR code and the fallback.
        let body = #"{"label":"Ann's phone","type":"iphone","pair":true}"#
        let paired = try curl(["-H", "Authorization: Bearer \(token)", "-H", "Content-Type: application/json", "--data-binary", body,
                               "-w", "\n%{http_code}", "http://\(gwAddress)/cp/api/v1/mesh/devices"])
        let lines = paired.stdout.split(separator: "\n")
        #expect(lines.last == "201", "\(paired.output)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(lines.dropLast().joined(separator: "\n").utf8)) as? [String: Any])
        let config = try #require(json["config"] as? String)
        #expect((json["qr_svg"] as? String)?.contains("<svg") == true)
        let fallback = try #require(json["fallback"] as? [String: Any])
        let urls = try #require(fallback["urls"] as? [String])
        #expect(urls == ["https://alpha.quazzar.mesh:8443", "https://beta.quazzar.mesh:8443"], "the hub first")
        let caPEM = try #require(fallback["ca_certificate_pem"] as? String)
        #expect(caPEM.hasPrefix("-----BEGIN CERTIFICATE-----"))
        #expect(!paired.stdout.contains("BEGIN PRIVATE KEY") && !paired.stdout.contains("BEGIN EC PRIVATE KEY"), "no CA key in the reply")
        let nodes = try #require(fallback["nodes"] as? [[String: Any]])
        #expect(nodes.map { $0["mesh_ips"] as? [String] ?? [] } == [[alpha.node!.ipv4, alpha.node!.ipv6], [beta.node!.ipv4, beta.node!.ipv6]])
        let pairingFile = out.appendingPathComponent("pairing-\(Nuid.short()).json")
        try Data(lines.dropLast().joined(separator: "\n").utf8).write(to: pairingFile)
        let caFile = out.appendingPathComponent("ca-\(Nuid.short()).pem")
        try Data(caPEM.utf8).write(to: caFile)
        // Only a phone is paired.
        let laptop = try curl(["-o", "/dev/null", "-w", "%{http_code}", "-H", "Authorization: Bearer \(token)", "-H", "Content-Type: application/json",
                               "--data-binary", #"{"label":"laptop","type":"laptop","pair":true}"#, "http://\(gwAddress)/cp/api/v1/mesh/devices"])
        #expect(laptop.stdout == "400")

        // The phone, brought up from its config.
        let phone = try lab.bringUp(config: config)
        #expect(await lab.reaches(from: phone.ns, alpha.node!.ipv4, count: 1, within: .seconds(60)), "the phone reaches the hub over WireGuard")

        // HTTPS on each node's mesh IPv4 and IPv6 from the phone, verified against the tenant CA.
        for n in [alpha, beta] {
            let node = n.node!
            for ip in [node.ipv4, "[\(node.ipv6)]"] {
                var ok = false
                for _ in 0..<100 where !ok {
                    let r = try curl(["--cacert", caFile.path, "--resolve", "\(node.dnsName):8443:\(ip)", "-o", "/dev/null", "-w", "%{http_code}",
                                      "https://\(node.dnsName):8443/healthz"], in: phone.ns)
                    ok = r.stdout == "200"
                    if !ok { try await Task.sleep(for: .milliseconds(100)) }
                }
                #expect(ok, "https://\(node.dnsName):8443 at \(ip)")
            }
        }
        // Another CA is refused (curl exit 60: peer certificate cannot be authenticated).
        let strangerCA = try TenantAuthority.create(tenantID: "stranger", tenantName: "Stranger")
        let strangerFile = out.appendingPathComponent("stranger-\(Nuid.short()).pem")
        try Data(strangerCA.certificatePEM.utf8).write(to: strangerFile)
        let refused = try curl(["--cacert", strangerFile.path, "--resolve", "\(alpha.node!.dnsName):8443:\(alpha.node!.ipv4)", "-o", "/dev/null",
                                "https://\(alpha.node!.dnsName):8443/healthz"], in: phone.ns)
        #expect(refused.status == 60, "\(refused.output)")
        // And so is the right CA for a name the node's certificate does not hold (beta's name at alpha's address).
        let wrongName = try curl(["--cacert", caFile.path, "--resolve", "\(beta.node!.dnsName):8443:\(alpha.node!.ipv4)", "-o", "/dev/null",
                                  "https://\(beta.node!.dnsName):8443/healthz"], in: phone.ns)
        #expect(wrongName.status == 60, "\(wrongName.output)")

        // The relay: a TCP proxy on the underlay in front of the gateway.
        let relay = TestRelay(listenHost: lab.bridge.host, listenPort: try freeLoopbackPort(), target: (lab.bridge.host, gwPort),
                              logDir: out)
        try await relay.restore()
        let meshctl = TestEnvironment.binDir.appendingPathComponent("meshctl").path
        let client = try ManagedProcess(
            name: "fallback-client-\(Nuid.short())", executable: TestEnvironment.which("ip"),
            arguments: ["netns", "exec", phone.ns.name, meshctl, "fallback", "--relay", relay.url, "--pairing", pairingFile.path,
                        "--dns", alpha.node!.ipv4, "--dns", beta.node!.ipv4, "--count", "150", "--interval-ms", "100", "--path", "/api/mesh/devices"],
            environment: ["MESH_TOKEN": token], logDir: out)
        func answers() -> [(ms: Int64, path: String, status: String)] {
            client.log().split(separator: "\n").compactMap { line in
                let f = line.split(separator: "\t", omittingEmptySubsequences: false)
                guard f.count >= 6, f[0] == "answer", let ms = Int64(f[2]) else { return nil }
                return (ms, String(f[4]), String(f[3]))
            }
        }
        func waitFor(_ what: String, timeout: Duration = .seconds(30), _ condition: () -> Bool) async throws {
            let deadline = ContinuousClock.now + timeout
            while !condition() {
                guard ContinuousClock.now < deadline, client.isRunning else {
                    Issue.record("\(what): \(client.log().suffix(3000))")
                    return
                }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        func unixMs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }
        try await waitFor("answers through the relay") { answers().filter { $0.path == "relay" }.count >= 10 }
        let cutAt = unixMs()
        await relay.cut()
        try await waitFor("answers over the mesh") { answers().contains { $0.ms > cutAt && $0.path.hasPrefix("mesh") } }
        try await waitFor("more answers over the mesh") { answers().filter { $0.ms > cutAt && $0.path.hasPrefix("mesh") }.count >= 10 }
        let restoredAt = unixMs()
        try await relay.restore()
        try await waitFor("answers through the restored relay") { answers().contains { $0.ms > restoredAt && $0.path == "relay" } }
        let deadline = ContinuousClock.now + .seconds(60)
        while client.isRunning, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(100)) }
        let log = client.log()
        #expect(client.exitStatus == 0, "every request answered: \(log.suffix(3000))")
        #expect(!log.contains("\nerror\t"), "\(log.suffix(3000))")
        let all = answers()
        #expect(all.count == 150)
        #expect(all.allSatisfy { $0.status == "200" }, "\(all.filter { $0.status != "200" }.prefix(5))")
        #expect(log.contains("switch\tmesh") && log.contains("switch\trelay"), "\(log.suffix(2000))")
        if let firstMesh = all.first(where: { $0.ms > cutAt && $0.path.hasPrefix("mesh") }),
           let firstRelay = all.first(where: { $0.ms > restoredAt && $0.path == "relay" }) {
            print("fallback e2e: failover \(firstMesh.ms - cutAt) ms (cut to first answer over the mesh), "
                  + "recovery \(firstRelay.ms - restoredAt) ms (restore to first answer through the relay), \(all.count) answers, 0 lost")
        }
        await relay.cut()
        _ = await gateway.terminate()
        try await lab.stop()
    }
}
