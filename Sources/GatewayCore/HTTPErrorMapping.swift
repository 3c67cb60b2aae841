import Foundation
import Hummingbird
import MeshDomain
import MeshProto

/// A header name (`HTTPField.Name`, reached through the `HTTPFields` that Hummingbird exports).
public typealias HTTPHeaderName = HTTPFields.Element.Name

/// An error as the HTTP client sees it: a status, a snake_case code, a message, and the extra
/// fields some codes carry. This file is the only place that turns errors into HTTP.
public struct APIError: Error, Sendable, Equatable {
    public var status: HTTPResponse.Status
    public var code: String
    public var message: String
    /// Extra members of the `error` object (plan and cap, retry_after_seconds, field).
    public var details: [String: DetailValue]
    /// Extra response headers (Retry-After, WWW-Authenticate).
    public var headers: [(HTTPHeaderName, String)]

    /// A JSON scalar in `details`.
    public enum DetailValue: Sendable, Equatable {
        case string(String)
        case int(Int)
    }

    /// An error with an explicit status and code (transport errors that are not domain errors).
    public init(status: HTTPResponse.Status, code: String, message: String, details: [String: DetailValue] = [:],
                headers: [(HTTPHeaderName, String)] = []) {
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers
    }

    /// Equal when what the client sees is equal (headers follow from the rest).
    public static func == (l: APIError, r: APIError) -> Bool {
        l.status == r.status && l.code == r.code && l.message == r.message && l.details == r.details
    }

    /// The one mapping from a domain error to HTTP.
    public init(_ e: MeshError) {
        switch e {
        case .invalidArgument(let field, let message):
            self.init(status: .badRequest, code: "invalid_argument", message: message,
                      details: field.isEmpty ? [:] : ["field": .string(field)])
        case .notFound(let m):
            self.init(status: .notFound, code: "not_found", message: m)
        case .alreadyExists(let m):
            self.init(status: .conflict, code: "already_exists", message: m)
        case .conflict(let m):
            self.init(status: .conflict, code: "conflict", message: m)
        case .permissionDenied(let m):
            self.init(status: .forbidden, code: "permission_denied", message: m)
        case .unauthenticated(let m):
            self.init(status: .unauthorized, code: "unauthenticated", message: m,
                      headers: [(.wwwAuthenticate, "Bearer realm=\"quazzar-mesh\"")])
        case .quotaExceeded(let plan, let cap):
            self.init(status: .forbidden, code: "quota_exceeded", message: e.message,
                      details: ["plan": .string(plan.key), "cap": .int(cap)])
        case .ruleCapReached(let plan, let cap):
            self.init(status: .forbidden, code: "quota_exceeded", message: e.message,
                      details: ["plan": .string(plan.key), "cap": .int(cap), "field": .string("rules")])
        case .rateLimited(let seconds):
            self.init(status: .tooManyRequests, code: "rate_limited", message: e.message,
                      details: ["retry_after_seconds": .int(seconds)], headers: [(.retryAfter, String(seconds))])
        case .poolExhausted(let m):
            self.init(status: .conflict, code: "pool_exhausted", message: m)
        case .failedPrecondition(let m):
            self.init(status: .conflict, code: "failed_precondition", message: m)
        case .gone(let m):
            self.init(status: .gone, code: "gone", message: m)
        case .unavailable(let m):
            self.init(status: .serviceUnavailable, code: "unavailable", message: m)
        case .deadlineExceeded(let m):
            self.init(status: .gatewayTimeout, code: "deadline_exceeded", message: m)
        case .internal:
            // The cause was logged where it happened; the client gets nothing of it.
            self.init(status: .internalServerError, code: "internal", message: "internal error")
        }
    }

    /// Any error that reaches the edge: domain errors by the mapping above, Hummingbird's own
    /// (unknown route, body too large) by status, and anything else as an internal error.
    public static func from(_ error: any Error) -> APIError {
        switch error {
        case let e as APIError:
            return e
        case let e as MeshError:
            return APIError(e)
        case let e as SignInError:
            return APIError(e)
        case let e as any HTTPResponseError:
            switch e.status {
            case .notFound: return APIError(status: .notFound, code: "not_found", message: "no such route")
            case .contentTooLarge: return .bodyTooLarge
            case .methodNotAllowed: return APIError(status: .methodNotAllowed, code: "method_not_allowed", message: "method not allowed")
            case .badRequest: return APIError(status: .badRequest, code: "invalid_argument", message: "bad request")
            default:
                return e.status.code < 500
                    ? APIError(status: e.status, code: "invalid_argument", message: e.status.reasonPhrase.lowercased())
                    : APIError(MeshError.internal(""))
            }
        default:
            return APIError(MeshError.internal(""))
        }
    }

    /// A refused sign-in: `unauthenticated` (401) for what the protocol refuses, `permission_denied`
    /// (403) for an identity without an account, `not_found` for an unknown provider, `unavailable`
    /// (503) for an unreachable provider; `reason` says which.
    public init(_ e: SignInError) {
        switch e {
        case .unknownProvider:
            self.init(status: .notFound, code: "not_found", message: e.message, details: ["reason": .string(e.reason)])
        case .providerUnavailable:
            self.init(status: .serviceUnavailable, code: "unavailable", message: e.message, details: ["reason": .string(e.reason)])
        case .notInvited, .invitationExpired, .unknownTenant:
            self.init(status: .forbidden, code: "permission_denied", message: e.message, details: ["reason": .string(e.reason)])
        default:
            self.init(status: .unauthorized, code: "unauthenticated", message: e.message, details: ["reason": .string(e.reason)])
        }
    }

    /// A request body over the size limit.
    public static let bodyTooLarge = APIError(status: .contentTooLarge, code: "payload_too_large", message: "request body too large")

    /// The JSON response: `{"error": {"code", "message", "request_id", ...details}}`.
    public func response(requestID: String) -> Response {
        var response = JSONBody.response(Body(error: self, requestID: requestID), status: status)
        for (name, value) in headers { response.headers[name] = value }
        return response
    }

    struct Body: JSONEncodable {
        let error: APIError
        let requestID: String

        func encode(to w: inout JSONWriter) {
            w.object { w in
                w.key("error"); w.object { w in
                    w.key("code"); w.string(error.code)
                    w.key("message"); w.string(error.message)
                    w.key("request_id"); w.string(requestID)
                    for (k, v) in error.details.sorted(by: { $0.key < $1.key }) {
                        w.key(k)
                        switch v {
                        case .string(let s): w.string(s)
                        case .int(let i): w.int(i)
                        }
                    }
                }
            }
        }
    }
}
