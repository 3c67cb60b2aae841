import Foundation
import Logging
import MeshTestSupport
import NodeApplierCore
import Testing

/// A UAPI socket file that no daemon listens on must not stop a node from starting its interface
/// (what a wireguard-go killed with SIGKILL, or a restarted container, leaves behind).
@Suite(.timeLimit(.minutes(2)),
       .enabled(if: TestEnvironment.runs(root: true, tools: ["wireguard-go", "python3"]), "needs root (/var/run/wireguard is root's) and wireguard-go"))
struct InterfaceSetupTests {
    init() throws { try TestEnvironment.require(root: true, tools: ["wireguard-go", "python3"]) }

    @Test func aStaleUAPISocketIsRemovedAndALiveOneIsKept() async throws {
        let iface = uniqueInterfaceName("wqst")
        let path = "/var/run/wireguard/\(iface).sock"
        try FileManager.default.createDirectory(atPath: "/var/run/wireguard", withIntermediateDirectories: true)
        defer { unlink(path) }
        let logger = Logger(label: "test")

        // No socket at all: no daemon.
        #expect(await InterfaceSetup.userspaceDaemonServes(iface, logger: logger) == false)

        // A socket bound and closed by a process that has exited: stale, and removed.
        let bind = try await run("/usr/bin/env", ["python3", "-c", "import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])", path])
        #expect(bind.status == 0)
        #expect(FileManager.default.fileExists(atPath: path))
        #expect(await InterfaceSetup.userspaceDaemonServes(iface, logger: logger) == false)
        #expect(!FileManager.default.fileExists(atPath: path))

        // A real wireguard-go on the same name: served, and its socket kept.
        let ns = try NetNamespace(prefix: "ifs")
        defer { ns.destroy() }
        try ns.startWireGuardGo(iface)
        #expect(await InterfaceSetup.userspaceDaemonServes(iface, logger: logger) == true)
        #expect(FileManager.default.fileExists(atPath: path))
    }
}
