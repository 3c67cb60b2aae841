import Foundation

/// The names of the host objects a test run creates: network namespaces, bridges, veth pairs and
/// WireGuard interfaces (whose UAPI sockets in `/var/run/wireguard` are global to the host).
///
/// Every name starts with the run's prefix, so that test runs sharing one machine never touch each
/// other's objects, and the clean-up of a run (`scripts/test-cleanup.sh PREFIX`) removes exactly
/// what that run made. `scripts/test.sh` picks one prefix per run and exports it as
/// `MESH_TEST_PREFIX` to every stage (the Swift tests, the VM, `meshlab` under the browser test);
/// a process started without it picks a fresh prefix of its own.
public enum TestNames {
    /// The run's prefix: a lowercase letter, then 5 lowercase letters or digits. All prefixes have
    /// the same length, so no run's prefix begins another's.
    public static let prefix: String = {
        if let p = ProcessInfo.processInfo.environment["MESH_TEST_PREFIX"], !p.isEmpty {
            guard isValidPrefix(p) else {
                fatalError("MESH_TEST_PREFIX=\(p) is not a lowercase letter followed by 5 lowercase letters or digits")
            }
            return p
        }
        return "mt" + randomCharacters(4)
    }()

    /// Whether `p` can be a run prefix (6 characters, leaving room in a 15-character interface name).
    public static func isValidPrefix(_ p: String) -> Bool {
        let chars = Array(p.utf8)
        guard chars.count == 6, (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(chars[0]) else { return false }
        return chars.allSatisfy { (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }
    }

    /// A network namespace name: `<prefix>-<kind>-<8 random characters>`.
    public static func namespace(_ kind: String) -> String {
        "\(prefix)-\(kind)-\(randomCharacters(8))"
    }

    /// A link name (bridge, veth end, WireGuard interface): `<prefix><kind>` filled up with random
    /// characters to 15, the kernel's limit for interface names.
    public static func link(_ kind: String) -> String {
        let head = String((prefix + kind).prefix(8))
        return head + randomCharacters(15 - head.count)
    }

    static func randomCharacters(_ n: Int) -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789")
        return String((0..<n).map { _ in alphabet.randomElement()! })
    }
}
