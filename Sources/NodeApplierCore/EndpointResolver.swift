import Dispatch
import Foundation
import MeshNet
import Synchronization

/// Turns `host:port` endpoints with DNS names into address literals (WireGuard only takes
/// addresses). Lookups run off the cooperative pool and are cached for a minute.
public final class EndpointResolver: Sendable {
    private let cache = Mutex<[String: (HostPort, Date)]>([:])
    private let queue = DispatchQueue(label: "mesh.node.resolver", attributes: .concurrent)

    public init() {}

    /// The endpoint with an address literal, or nil if the name does not resolve.
    public func resolve(_ endpoint: HostPort) async -> HostPort? {
        if endpoint.address != nil { return endpoint }
        let key = endpoint.description
        if let (hp, at) = cache.withLock({ $0[key] }), Date().timeIntervalSince(at) < 60 { return hp }
        let host = endpoint.host, port = endpoint.port
        let resolved: HostPort? = await withCheckedContinuation { cont in
            queue.async {
                var hints = addrinfo()
                hints.ai_socktype = Int32(SOCK_DGRAM.rawValue)
                var res: UnsafeMutablePointer<addrinfo>?
                guard getaddrinfo(host, nil, &hints, &res) == 0, let first = res else {
                    cont.resume(returning: nil)
                    return
                }
                defer { freeaddrinfo(res) }
                var buf = [CChar](repeating: 0, count: Int(NI_MAXHOST))
                var ai: UnsafeMutablePointer<addrinfo>? = first
                // Prefer IPv4 (most underlays), else the first address.
                var chosen: String?
                while let a = ai {
                    if getnameinfo(a.pointee.ai_addr, a.pointee.ai_addrlen, &buf, socklen_t(buf.count), nil, 0, NI_NUMERICHOST) == 0 {
                        let text = String(decoding: buf.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
                        if a.pointee.ai_family == AF_INET { chosen = text; break }
                        if chosen == nil { chosen = text }
                    }
                    ai = a.pointee.ai_next
                }
                cont.resume(returning: chosen.map { HostPort(host: $0, port: port) })
            }
        }
        if let resolved { cache.withLock { $0[key] = (resolved, Date()) } }
        return resolved
    }
}

