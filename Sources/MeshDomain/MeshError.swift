import MeshProto

/// The domain errors of the mesh control plane, shared by every service.
///
/// On the bus an error travels as a protobuf `mesh.v1.Error` body plus the ADR-32 headers
/// (`Nats-Service-Error-Code` carries ``busCode``); MeshClient turns a failed request back into this
/// type on the caller's side. The gateway maps each case to exactly one HTTP status.
/// The message is what a client sees; causes are logged where they happen, never sent.
public enum MeshError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalidArgument(field: String, message: String)
    case notFound(String)
    case alreadyExists(String)
    case conflict(String)
    case permissionDenied(String)
    case unauthenticated(String)
    case quotaExceeded(plan: Mesh_V1_Plan, cap: Int)
    /// The plan's cap on access-policy rules (code `quota_exceeded`, field "rules").
    case ruleCapReached(plan: Mesh_V1_Plan, cap: Int)
    case rateLimited(retryAfterSeconds: Int)
    case poolExhausted(String)
    case unavailable(String)
    case deadlineExceeded(String)
    case failedPrecondition(String)
    /// It existed but can no longer be used (a one-time config link that was used or expired).
    case gone(String)
    case `internal`(String)

    /// The stable error code.
    public var code: Mesh_V1_ErrorCode {
        switch self {
        case .invalidArgument: .invalidArgument
        case .notFound: .notFound
        case .alreadyExists: .alreadyExists
        case .conflict: .conflict
        case .permissionDenied: .permissionDenied
        case .unauthenticated: .unauthenticated
        case .quotaExceeded, .ruleCapReached: .quotaExceeded
        case .rateLimited: .rateLimited
        case .poolExhausted: .poolExhausted
        case .unavailable: .unavailable
        case .deadlineExceeded: .deadlineExceeded
        case .failedPrecondition: .failedPrecondition
        case .gone: .gone
        case .internal: .internal
        }
    }

    /// The client-facing message.
    public var message: String {
        switch self {
        case .invalidArgument(_, let m), .notFound(let m), .alreadyExists(let m), .conflict(let m),
             .permissionDenied(let m), .unauthenticated(let m), .poolExhausted(let m), .unavailable(let m),
             .deadlineExceeded(let m), .failedPrecondition(let m), .gone(let m), .internal(let m):
            return m
        case .quotaExceeded(let plan, let cap):
            return "device cap reached: the \(plan.displayName) plan allows \(cap) devices"
        case .ruleCapReached(let plan, let cap):
            return "rule cap reached: the \(plan.displayName) plan allows \(cap) access rules"
        case .rateLimited(let s):
            return "too many devices created: try again in \(s) seconds"
        }
    }

    public var description: String { "\(code): \(message)" }

    /// The `field` of a rule-cap error on the bus (it tells it from the device cap).
    static let ruleCapField = "rules"

    /// The numeric code in the `Nats-Service-Error-Code` header (HTTP-like, as ADR-32 suggests).
    public var busCode: Int {
        switch self {
        case .invalidArgument: 400
        case .unauthenticated: 401
        case .permissionDenied, .quotaExceeded, .ruleCapReached: 403
        case .notFound: 404
        case .alreadyExists, .conflict, .poolExhausted, .failedPrecondition: 409
        case .gone: 410
        case .rateLimited: 429
        case .internal: 500
        case .unavailable: 503
        case .deadlineExceeded: 504
        }
    }

    /// The protobuf form.
    public var proto: Mesh_V1_Error {
        var e = Mesh_V1_Error()
        e.code = code
        e.message = message
        switch self {
        case .invalidArgument(let field, _): e.field = field
        case .quotaExceeded(let plan, let cap):
            e.plan = plan
            e.cap = UInt32(clamping: cap)
        case .ruleCapReached(let plan, let cap):
            e.plan = plan
            e.cap = UInt32(clamping: cap)
            e.field = Self.ruleCapField
        case .rateLimited(let s): e.retryAfterSeconds = UInt32(clamping: s)
        default: break
        }
        return e
    }

    /// Rebuilds the error from its protobuf form.
    public init(proto e: Mesh_V1_Error) {
        switch e.code {
        case .invalidArgument: self = .invalidArgument(field: e.field, message: e.message)
        case .notFound: self = .notFound(e.message)
        case .alreadyExists: self = .alreadyExists(e.message)
        case .conflict: self = .conflict(e.message)
        case .permissionDenied: self = .permissionDenied(e.message)
        case .unauthenticated: self = .unauthenticated(e.message)
        case .quotaExceeded where e.field == Self.ruleCapField: self = .ruleCapReached(plan: e.plan, cap: Int(e.cap))
        case .quotaExceeded: self = .quotaExceeded(plan: e.plan, cap: Int(e.cap))
        case .rateLimited: self = .rateLimited(retryAfterSeconds: Int(e.retryAfterSeconds))
        case .poolExhausted: self = .poolExhausted(e.message)
        case .unavailable: self = .unavailable(e.message)
        case .deadlineExceeded: self = .deadlineExceeded(e.message)
        case .failedPrecondition: self = .failedPrecondition(e.message)
        case .gone: self = .gone(e.message)
        case .internal, .unspecified, .UNRECOGNIZED: self = .internal(e.message.isEmpty ? "internal error" : e.message)
        }
    }
}
