import MeshBus
import MeshDomain
import MeshProto
import SwiftProtobuf

extension MeshError {
    /// Maps a failed bus request to the domain error the service meant, or to `unavailable` /
    /// `deadlineExceeded` when the service could not be reached.
    public init(busError: any Error) {
        switch busError {
        case let e as MeshError:
            self = e
        case BusError.service(let code, let description, let body):
            if let e = try? Mesh_V1_Error(serializedBytes: body), e.code != .unspecified {
                self = MeshError(proto: e)
            } else {
                self = code == 504 ? .deadlineExceeded(description) : code == 503 ? .unavailable(description) : .internal(description)
            }
        case BusError.noResponders(let subject):
            self = .unavailable("no service answers \(subject)")
        case BusError.timeout(let subject):
            self = .deadlineExceeded("\(subject) did not answer in time")
        case BusError.closed:
            self = .unavailable("message bus connection closed")
        case BusError.connectionLost(_, let text):
            self = .unavailable("message bus connection lost: \(text)")
        case is CancellationError:
            self = .unavailable("request cancelled")
        default:
            self = .internal("internal error")
        }
    }
}

/// A service handler's `MeshError` travels as ADR-32 headers and a `mesh.v1.Error` body.
extension MeshError: BusServiceError {
    public var serviceErrorCode: Int { busCode }
    public var serviceErrorMessage: String { message }
    public var serviceErrorBody: [UInt8] { (try? proto.serializedBytes()) ?? [] }
}

extension BusConnection {
    /// Sends a protobuf request and decodes the protobuf reply; every failure comes back as a
    /// ``MeshError`` (a service's own error, or `unavailable` / `deadlineExceeded`).
    public func call<Response: SwiftProtobuf.Message>(
        _ subject: String, _ request: some SwiftProtobuf.Message, as: Response.Type = Response.self,
        requestID: String? = nil, timeout: Duration = .seconds(5)
    ) async throws(MeshError) -> Response {
        let payload: [UInt8]
        do {
            payload = try request.serializedBytes()
        } catch {
            throw .internal("cannot encode \(type(of: request).protoMessageName)")
        }
        var headers = BusHeaders()
        if let requestID { headers[BusHeaderName.requestID] = requestID }
        let reply: BusMessage
        do {
            reply = try await self.request(subject, payload, headers: headers, timeout: timeout)
        } catch {
            throw MeshError(busError: error)
        }
        do {
            return try Response(serializedBytes: reply.payload)
        } catch {
            throw .internal("malformed \(Response.protoMessageName) reply from \(subject)")
        }
    }
}
