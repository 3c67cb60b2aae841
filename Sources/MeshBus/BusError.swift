/// Errors raised by the bus itself (as opposed to a service's domain errors, which travel as
/// ``BusError/service(code:description:body:)``).
public enum BusError: Error, Sendable, Equatable, CustomStringConvertible {
    /// nats.c returned an error status.
    case nats(status: Int32, text: String, operation: String)
    /// A request got the server's "no responders" status (503): nothing is subscribed to the subject.
    case noResponders(subject: String)
    /// No reply arrived before the deadline.
    case timeout(subject: String)
    /// The connection is closed; nothing more can be sent on it.
    case closed
    /// The connection to the server failed during the operation (a socket error, a stale or lost
    /// connection): the client is reconnecting. Whether a message sent by the operation reached the
    /// server is unknown, as with a lost reply.
    case connectionLost(operation: String, text: String)
    /// A subject or queue name is not valid.
    case invalidSubject(String)
    /// A service answered with an error (ADR-32 headers). `body` holds the service's encoded error, if any.
    case service(code: Int, description: String, body: [UInt8])
    /// Credentials could not be read or parsed.
    case invalidCredentials(String)

    public var description: String {
        switch self {
        case .nats(let status, let text, let op): "nats \(op) failed: \(text) (status \(status))"
        case .noResponders(let s): "no responders for \(s)"
        case .timeout(let s): "request to \(s) timed out"
        case .closed: "connection closed"
        case .connectionLost(let op, let text): "nats \(op) failed: connection lost (\(text))"
        case .invalidSubject(let s): "invalid subject \(s)"
        case .service(let code, let d, _): "service error \(code): \(d)"
        case .invalidCredentials(let why): "invalid credentials: \(why)"
        }
    }
}

/// An error a service handler can throw to control what the caller sees.
///
/// The bus sends `serviceErrorCode` and `serviceErrorMessage` in the ADR-32 headers and
/// `serviceErrorBody` as the payload. Any other error becomes code 500 with a generic message,
/// and its cause is only logged.
public protocol BusServiceError: Error {
    /// HTTP-like numeric code, e.g. 400, 404, 409, 429, 503.
    var serviceErrorCode: Int { get }
    /// A message safe to show to the caller.
    var serviceErrorMessage: String { get }
    /// An encoded error body (e.g. a protobuf `mesh.v1.Error`).
    var serviceErrorBody: [UInt8] { get }
}
