import Foundation
import MeshTestSupport
import Testing

/// What each executable is built from: NodeApplier, the Gateway and meshctl hold no database code
/// and do not load libpq, and meshctl holds no HTTP server. Swift packages are linked statically,
/// so a module's presence shows in the binary's own symbols (`$s<length><Module>` in Swift's
/// mangling), and a C library's in `ldd` and the undefined symbols. Each check is made on an
/// executable that must have the dependency too, so a check that could never see it fails.
@Suite("Linkage", .timeLimit(.minutes(5)))
struct LinkageTests {
    /// The shared libraries an executable loads (`ldd`).
    static func sharedLibraries(_ exe: String) throws -> [String] {
        let r = try runClean("/usr/bin/ldd", [try executablePath(exe)])
        guard r.status == 0 else { throw TestSetupError.failed("ldd \(exe) exited \(r.status): \(r.stderr)") }
        // Each line is "<tab>libname.so.N => path (address)".
        return r.stdout.split(separator: "\n").compactMap { $0.split(whereSeparator: { $0 == " " || $0 == "\t" }).first.map(String.init) }
    }

    /// Defined and undefined symbol names of an executable (`nm`).
    static func symbols(_ exe: String) throws -> (defined: [Substring], undefined: [Substring]) {
        let r = try runClean("/usr/bin/nm", ["--format=posix", try executablePath(exe)], deadline: .seconds(120))
        guard r.status == 0 else { throw TestSetupError.failed("nm \(exe) exited \(r.status): \(r.stderr)") }
        var defined: [Substring] = [], undefined: [Substring] = []
        for line in r.stdout.split(separator: "\n") {
            let parts = line.split(separator: " ")
            guard parts.count >= 2 else { continue }
            if parts[1] == "U" || parts[1] == "w" { undefined.append(parts[0]) } else { defined.append(parts[0]) }
        }
        return (defined, undefined)
    }

    /// Whether Swift module `module` has code in the binary.
    static func holds(_ symbols: [Substring], module: String) -> Bool {
        let prefix = "$s\(module.utf8.count)\(module)"
        return symbols.contains { $0.hasPrefix(prefix) }
    }

    static func loadsLibpq(_ exe: String) throws -> Bool { try sharedLibraries(exe).contains { $0.hasPrefix("libpq.so") } }

    @Test func noDatabaseOutsideTheServicesWithTables() throws {
        for exe in ["AllocatorSvc", "ProvisionSvc", "FanoutSvc"] {
            #expect(try Self.loadsLibpq(exe), "\(exe) has tables and must load libpq: the check cannot see it")
            let s = try Self.symbols(exe)
            #expect(Self.holds(s.defined, module: "MeshStore"), "\(exe): MeshStore not seen")
            #expect(s.undefined.contains { $0.hasPrefix("PQexec") }, "\(exe): no libpq call seen")
        }
        for exe in ["NodeApplier", "Gateway", "meshctl"] {
            #expect(try !Self.loadsLibpq(exe), "\(exe) loads libpq")
            let s = try Self.symbols(exe)
            #expect(!Self.holds(s.defined, module: "MeshStore"), "\(exe) holds MeshStore")
            #expect(!Self.holds(s.defined, module: "ServiceStore"), "\(exe) holds ServiceStore")
            #expect(!s.undefined.contains { $0.hasPrefix("PQ") }, "\(exe) calls libpq")
        }
    }

    @Test func meshctlHoldsNoHTTPServer() throws {
        let gateway = try Self.symbols("Gateway").defined
        #expect(Self.holds(gateway, module: "Hummingbird") && Self.holds(gateway, module: "HummingbirdCore"),
                "the Gateway must hold Hummingbird: the check cannot see it")
        let meshctl = try Self.symbols("meshctl").defined
        for module in ["Hummingbird", "HummingbirdCore", "HummingbirdTLS", "GatewayCore"] {
            #expect(!Self.holds(meshctl, module: module), "meshctl holds \(module)")
        }
        // What meshctl needs for tokens is there: the check reads the right binary.
        #expect(Self.holds(meshctl, module: "MeshAuth") && Self.holds(meshctl, module: "JWTKit"))
    }
}
