#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Every failure the WireGuard control library reports. Errno values are positive.
public enum WireGuardError: Error, Sendable, Hashable, CustomStringConvertible {
    /// No such interface, or it is not a WireGuard device (ENODEV, ENOENT on a UAPI socket, EOPNOTSUPP from the
    /// kernel for a non-WireGuard link).
    case deviceNotFound(String)
    /// The interface already exists (EEXIST when creating a link).
    case alreadyExists(String)
    /// The caller lacks CAP_NET_ADMIN or access to the UAPI socket (EPERM, EACCES).
    case permissionDenied(operation: String)
    /// The kernel or daemon rejected an argument (EINVAL and friends).
    case invalidArgument(errno: Int32, operation: String)
    /// A configuration this library refuses before sending anything.
    case invalidConfiguration(String)
    /// Any other netlink error: the errno from NLMSG_ERROR / NLMSG_DONE or from a socket call.
    case netlink(errno: Int32, operation: String)
    /// The userspace daemon answered `errno=N` with N nonzero, or the socket failed.
    case uapi(errno: Int32, operation: String)
    /// A reply that does not follow the protocol.
    case malformedReply(String)
    /// A kernel dump changed while being read (NLM_F_DUMP_INTR) more often than the retry limit.
    case dumpInterrupted(String)
    /// Neither the kernel nor a userspace daemon serves the interface.
    case noBackend(interface: String, kernel: String, userspace: String)
    /// Starting or stopping a userspace daemon failed.
    case daemon(String)

    public var description: String {
        switch self {
        case .deviceNotFound(let name): "WireGuard device \(name) not found"
        case .alreadyExists(let name): "interface \(name) already exists"
        case .permissionDenied(let op): "\(op): permission denied (needs CAP_NET_ADMIN)"
        case .invalidArgument(let e, let op): "\(op): invalid argument (\(errnoName(e)))"
        case .invalidConfiguration(let why): "invalid configuration: \(why)"
        case .netlink(let e, let op): "\(op): netlink error \(errnoName(e))"
        case .uapi(let e, let op): "\(op): UAPI error \(errnoName(e))"
        case .malformedReply(let why): "malformed reply: \(why)"
        case .dumpInterrupted(let op): "\(op): the device kept changing during the dump"
        case .noBackend(let name, let kernel, let userspace):
            "no WireGuard backend for \(name): kernel: \(kernel); userspace: \(userspace)"
        case .daemon(let why): "userspace daemon: \(why)"
        }
    }

    /// Maps an errno from the kernel to the typed case, keeping the raw value where no case fits.
    static func fromNetlink(errno e: Int32, operation: String, device: String? = nil) -> WireGuardError {
        switch e {
        case ENODEV, ENXIO: .deviceNotFound(device ?? operation)
        case EOPNOTSUPP where device != nil: .deviceNotFound(device!)
        case EEXIST: .alreadyExists(device ?? operation)
        case EPERM, EACCES: .permissionDenied(operation: operation)
        case EINVAL, ERANGE, EAFNOSUPPORT, EPFNOSUPPORT, EMSGSIZE: .invalidArgument(errno: e, operation: operation)
        default: .netlink(errno: e, operation: operation)
        }
    }

    /// Maps a UAPI `errno=` value (wireguard-go sends it negative) to the typed case.
    static func fromUAPI(errno raw: Int64, operation: String, device: String) -> WireGuardError {
        let e = Int32(clamping: raw < 0 ? -raw : raw)
        switch e {
        case ENODEV, ENOENT: return .deviceNotFound(device)
        case EPERM, EACCES: return .permissionDenied(operation: operation)
        case EINVAL, EPROTO: return .invalidArgument(errno: e, operation: operation)
        default: return .uapi(errno: e, operation: operation)
        }
    }
}

/// `strerror` text plus the number, for messages.
func errnoName(_ e: Int32) -> String {
    if let s = strerror(e) { return "\(String(cString: s)) (errno \(e))" }
    return "errno \(e)"
}
