#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Why the hosts file could not be written.
public struct MeshDNSHostsFileError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The system call that failed.
    public var operation: String
    /// The path it failed on.
    public var path: String
    /// The errno value.
    public var errno: Int32

    public var description: String { "\(operation) \(path): \(String(cString: strerror(errno)))" }
}

extension MeshDNSZoneSnapshot {
    /// The zone as hosts-file lines, `<address> <fqdn>` with IPv4 lines before IPv6 ones for each name,
    /// names sorted, for CoreDNS's `hosts` plugin or dnsmasq's `addn-hosts`.
    public var hostsFile: String {
        var out = "# Quazzar Mesh names for \(origin.withoutTrailingDot), serial \(revision). Generated; edits are lost.\n"
        for (name, addresses) in records {
            let host = name.withoutTrailingDot
            for address in addresses { out += "\(address) \(host)\n" }
        }
        return out
    }
}

extension MeshDNSZone {
    /// Writes the current zone as a hosts file, atomically: the text goes to a temporary file in the same
    /// directory, is flushed to disk, and is renamed over `path`, so a reader sees the old file or the new
    /// one, never a half-written one.
    public func writeHostsFile(to path: String) throws(MeshDNSHostsFileError) {
        try Self.writeAtomically(snapshot().hostsFile, to: path)
    }

    static func writeAtomically(_ text: String, to path: String) throws(MeshDNSHostsFileError) {
        let temporary = "\(path).tmp-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw MeshDNSHostsFileError(operation: "open", path: temporary, errno: errno) }
        var failure: MeshDNSHostsFileError?
        let bytes = Array(text.utf8)
        var written = 0
        while written < bytes.count, failure == nil {
            let n = bytes[written...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno != EINTR { failure = MeshDNSHostsFileError(operation: "write", path: temporary, errno: errno) }
            } else {
                written += n
            }
        }
        // Without fsync a crash after the rename could leave an empty file under the final name.
        if failure == nil, fsync(fd) != 0 {
            failure = MeshDNSHostsFileError(operation: "fsync", path: temporary, errno: errno)
        }
        close(fd)
        if failure == nil, rename(temporary, path) != 0 {
            failure = MeshDNSHostsFileError(operation: "rename", path: path, errno: errno)
        }
        if let failure {
            unlink(temporary)
            throw failure
        }
    }
}
