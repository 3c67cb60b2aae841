import Foundation
import Hummingbird
import Logging
import MeshDomain
import MeshNet

/// The per-request context: Hummingbird's core storage plus the request id.
public struct GatewayRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// Set by ``RequestIDMiddleware`` before any handler runs.
    public var requestID: String = ""

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
    }
}

/// The request id header, accepted from the client and echoed on every response.
public let requestIDHeader = HTTPHeaderName("X-Request-Id")!

/// Gives every request an id (the client's `X-Request-Id` when it is sane, else a new UUID), puts
/// it on the logger and the response, turns every error into the JSON error body (through
/// ``APIError/from(_:)``), and writes one access-log line per request.
public struct RequestIDMiddleware: RouterMiddleware {
    public typealias Context = GatewayRequestContext

    public init() {}

    /// Letters, digits and `._:-`, at most 128 characters: anything else could forge log lines or headers.
    static func sane(_ id: String) -> Bool {
        !id.isEmpty && id.utf8.count <= 128 && id.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c == 0x2e || c == 0x5f || c == 0x3a || c == 0x2d
        }
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        let incoming = request.headers[requestIDHeader] ?? ""
        let id = Self.sane(incoming) ? incoming : UUID().lowercasedText
        context.requestID = id
        context.logger[metadataKey: "request.id"] = "\(id)"
        let start = ContinuousClock.now
        var response: Response
        do {
            response = try await next(request, context)
        } catch {
            let api = APIError.from(error)
            if api.status == .internalServerError {
                // The cause stays in the log; the client sees only the mapped message.
                context.logger.error("request failed", metadata: ["error": "\(error)", "http.status": "\(api.status.code)"])
            } else if api.status.code >= 500 {
                context.logger.warning("request failed", metadata: ["error": "\(error)", "http.status": "\(api.status.code)"])
            } else {
                context.logger.debug("request refused", metadata: ["error": "\(error)", "http.status": "\(api.status.code)"])
            }
            response = api.response(requestID: id)
        }
        response.headers[requestIDHeader] = id
        let elapsed = ContinuousClock.now - start
        context.logger.info("request", metadata: [
            "http.method": "\(request.method)", "http.path": "\(request.uri.path)", "http.status": "\(response.status.code)",
            "duration_ms": "\(Double(elapsed.components.attoseconds / 1_000_000_000_000 + elapsed.components.seconds * 1_000_000) / 1000)",
        ])
        return response
    }
}
