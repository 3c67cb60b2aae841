import Logging
import MeshDomain
import MeshWireGuard
import ServiceLifecycle
import Synchronization

/// The node's readings of its own interface, taken by one reader (``HandshakeReporter``) and used by
/// everything else that needs to know how the interface is: the interface watch, and the state the
/// node answers on its control subject.
///
/// A reading is a full dump of the interface: WireGuard has no cheaper query (a UAPI `get` and a
/// netlink dump both list every peer). At 50,000 peers one dump takes wireguard-go about 200 ms, during
/// which it holds its configuration lock, so every peer change waits for it. Reading once for all
/// three users, no more often than the reporter's duty cycle allows, and never for a state request,
/// keeps the interface free for peer changes (docs/benchmarks.md, "Scale").
public final class InterfaceReadings: Sendable {
    struct State {
        /// The listen port the last successful reading saw; nil before the first.
        var listenPort: UInt16?
        /// Readings in a row that failed or found the interface without the node's key.
        var misses = 0
        var why: String?
    }

    let expectedKey: WireGuardKey?
    let state = Mutex(State())

    /// Readings of an interface that must hold `privateKey` (base64).
    public init(privateKey: String) {
        expectedKey = WireGuardKey(base64: privateKey)
    }

    /// Records a reading that found `privateKey` and `listenPort` on the interface.
    public func record(privateKey: WireGuardKey?, listenPort: UInt16) {
        let keyed = privateKey == expectedKey
        state.withLock { s in
            s.listenPort = listenPort
            s.misses = keyed ? 0 : s.misses + 1
            s.why = keyed ? nil : "it no longer holds the node's key"
        }
    }

    /// Records a reading that failed.
    public func recordFailure(_ error: any Error) {
        state.withLock { s in
            s.misses += 1
            s.why = "it cannot be read: \(error)"
        }
    }

    /// The listen port of the last successful reading; nil before the first.
    public var listenPort: UInt16? { state.withLock { $0.listenPort } }

    /// Why the interface counts as lost: two readings in a row failed or found it without the node's
    /// key (one failed read alone is not taken for a lost interface). Nil while it is fine.
    public var lost: String? { state.withLock { $0.misses >= 2 ? $0.why : nil } }
}

/// Stops the node with an error when its interface is gone, or was replaced by one without the
/// node's key (wireguard-go restarted, the link deleted): the supervisor then starts the node again,
/// and the start sets the interface up again and syncs every peer. It judges by the reporter's
/// readings (``InterfaceReadings/lost``) and reads nothing itself.
struct InterfaceWatch: Service {
    let readings: InterfaceReadings
    let interface: String
    let interval: Duration
    let logger: Logger

    func run() async throws {
        let lost: String? = await cancelWhenGracefulShutdown { () async -> String? in
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                if Task.isCancelled { break }
                if let why = readings.lost { return why }
            }
            return nil
        }
        if let lost {
            logger.error("the interface was lost; stopping so that the node starts again and sets it up",
                         metadata: ["interface": "\(interface)", "why": "\(lost)"])
            throw MeshError.unavailable("interface \(interface) lost: \(lost)")
        }
    }
}
