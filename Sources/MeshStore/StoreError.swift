/// Errors from the store, typed by PostgreSQL's SQLSTATE class so callers can react to the cause
/// (retry a serialization failure, map a unique violation to "already exists") without parsing text.
public enum StoreError: Error, Sendable, Equatable, CustomStringConvertible {
    /// 23505: a UNIQUE or PRIMARY KEY constraint was violated.
    case uniqueViolation(constraint: String)
    /// 23503
    case foreignKeyViolation(constraint: String)
    /// 23514
    case checkViolation(constraint: String)
    /// 23502
    case notNullViolation(column: String)
    /// 40001: retried automatically by ``Store/write(isolation:retries:_:)``.
    case serializationFailure
    /// 40P01: retried automatically by ``Store/write(isolation:retries:_:)``.
    case deadlockDetected
    /// 57014: the statement was cancelled (statement_timeout).
    case queryCanceled
    /// The connection broke (class 08, admin shutdown 57P01..57P03, or a socket error). Whether a
    /// COMMIT in flight took effect is unknown; the pool reconnects for the next transaction.
    case connectionLost(String)
    /// Could not connect at all.
    case connectFailed(String)
    /// No pooled connection became free in time.
    case poolTimeout
    /// The store was closed.
    case closed
    /// A column could not be decoded as the requested type.
    case decoding(column: String, reason: String)
    /// Any other server error.
    case server(sqlstate: String, message: String)

    public var description: String {
        switch self {
        case .uniqueViolation(let c): "unique violation (\(c))"
        case .foreignKeyViolation(let c): "foreign key violation (\(c))"
        case .checkViolation(let c): "check violation (\(c))"
        case .notNullViolation(let c): "not-null violation (\(c))"
        case .serializationFailure: "serialization failure"
        case .deadlockDetected: "deadlock detected"
        case .queryCanceled: "query canceled"
        case .connectionLost(let m): "connection lost: \(m)"
        case .connectFailed(let m): "connect failed: \(m)"
        case .poolTimeout: "timed out waiting for a database connection"
        case .closed: "store closed"
        case .decoding(let c, let r): "cannot decode column \(c): \(r)"
        case .server(let s, let m): "database error \(s): \(m)"
        }
    }

    /// Whether retrying the whole transaction may succeed.
    public var isTransient: Bool {
        switch self {
        case .serializationFailure, .deadlockDetected: true
        default: false
        }
    }

    static func from(sqlstate: String, message: String, constraint: String?, column: String?) -> StoreError {
        switch sqlstate {
        case "23505": return .uniqueViolation(constraint: constraint ?? "")
        case "23503": return .foreignKeyViolation(constraint: constraint ?? "")
        case "23514": return .checkViolation(constraint: constraint ?? "")
        case "23502": return .notNullViolation(column: column ?? "")
        case "40001": return .serializationFailure
        case "40P01": return .deadlockDetected
        case "57014": return .queryCanceled
        case "57P01", "57P02", "57P03": return .connectionLost(message)
        default:
            if sqlstate.hasPrefix("08") { return .connectionLost(message) }
            return .server(sqlstate: sqlstate, message: message)
        }
    }
}
