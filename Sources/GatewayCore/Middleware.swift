import Foundation
import Hummingbird
import Logging
import MeshAuth
import MeshDomain
import MeshNet

/// The per-request context: Hummingbird's core storage plus the request id.
public struct GatewayRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// Set by ``RequestIDMiddleware`` before any handler runs.
    public var requestID: String = ""
    /// The browser session of a request without an `Authorization` header, opened from its cookie by
    /// ``SessionMiddleware`` (ProvisionSvc still confirms it on every request).
    public var session: SessionCookie?
    /// Why the request's session cookie was not accepted (expired, not sealed by this deployment).
    public var sessionRefusal: String?

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

/// Opens the session cookie of requests that carry no `Authorization` header, refuses
/// state-changing requests it authenticates unless their `Origin` is this site's (on top of the
/// cookie's `SameSite=Strict`), renews the cookie while the session is active (past half its idle
/// window), and clears it when the session was refused. Bearer tokens bypass all of it: a browser
/// never adds them by itself, so they cannot be forged cross-site.
public struct SessionMiddleware: RouterMiddleware {
    public typealias Context = GatewayRequestContext
    let configuration: SignInConfiguration

    public init(configuration: SignInConfiguration) {
        self.configuration = configuration
    }

    /// Methods that change state.
    static func isUnsafe(_ m: HTTPRequest.Method) -> Bool { !(m == .get || m == .head || m == .options) }

    /// Refuses a cookie-authenticated state-changing request from any other origin.
    static func checkOrigin(_ request: Request, allowed: Set<String>) throws(MeshError) {
        if request.headers[secFetchSiteHeader] == "cross-site" {
            throw .permissionDenied("cross-site request refused: it was not sent by this site's page")
        }
        guard let origin = request.headers[.origin] else {
            throw .permissionDenied("cross-site request refused: a request with the session cookie must carry this site's Origin")
        }
        guard allowed.contains(origin) else { throw .permissionDenied("cross-site request refused: origin \(origin) is not this site's") }
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard configuration.sessionsEnabled, let sealer = configuration.sealer, request.headers[.authorization] == nil,
              let raw = request.cookies[configuration.sessionCookieName]?.value else {
            return try await next(request, context)
        }
        var context = context
        var renewal: SessionCookie?
        if let s = sealer.open(raw, as: SessionCookie.self, purpose: .session) {
            switch configuration.session.state(idleExpires: Date(timeIntervalSince1970: Double(s.idle)),
                                                absoluteExpires: Date(timeIntervalSince1970: Double(s.max)), now: Date()) {
            case .expired:
                context.sessionRefusal = "your session has expired: sign in again"
            case .active:
                context.session = s
            case .renew(let until):
                context.session = s
                var r = s
                r.idle = Int64(until.timeIntervalSince1970)
                renewal = r
            }
        } else {
            context.sessionRefusal = "your session cookie is not valid here: sign in again"
        }
        if context.session != nil && Self.isUnsafe(request.method) {
            try Self.checkOrigin(request, allowed: configuration.allowedOrigins)
        }
        var response: Response
        do {
            response = try await next(request, context)
        } catch {
            // A refused session: the browser forgets the cookie with the answer.
            var api = APIError.from(error)
            guard api.status == .unauthorized else { throw error }
            api.headers.append((.setCookie, SignInCookies.clear(configuration.sessionCookieName, secure: configuration.secureCookies).description))
            throw api
        }
        let setsSession = response.headers[values: .setCookie].contains { $0.hasPrefix(configuration.sessionCookieName + "=") }
        if response.status == .unauthorized && !setsSession {
            response.setCookie(SignInCookies.clear(configuration.sessionCookieName, secure: configuration.secureCookies))
        } else if let renewal, response.status.code < 400, !setsSession {
            response.setCookie(SignInCookies.session(sealer.seal(renewal, purpose: .session), configuration: configuration, cookie: renewal))
        }
        return response
    }
}

/// `Sec-Fetch-Site` (not among the predefined header names).
let secFetchSiteHeader = HTTPHeaderName("Sec-Fetch-Site")!

/// The gateway's cookies: `HttpOnly`, `Secure` (with the `__Host-` prefix) where the browser keeps
/// it, `Path=/`; the session `SameSite=Strict`, a sign-in attempt `SameSite=Lax` (it must come back
/// with the provider's redirect, a cross-site navigation).
public enum SignInCookies {
    public static func session(_ value: String, configuration: SignInConfiguration, cookie: SessionCookie) -> Cookie {
        let left = max(1, Int(cookie.idle - Int64(Date().timeIntervalSince1970)))
        return Cookie(name: configuration.sessionCookieName, value: value, maxAge: left, path: "/", secure: configuration.secureCookies,
                      httpOnly: true, sameSite: .strict)
    }

    public static func attempt(_ name: String, _ value: String, maxAge: Int, secure: Bool) -> Cookie {
        Cookie(name: name, value: value, maxAge: maxAge, path: "/", secure: secure, httpOnly: true, sameSite: .lax)
    }

    /// A cookie that makes the browser forget `name`.
    public static func clear(_ name: String, secure: Bool) -> Cookie {
        Cookie(name: name, value: "", expires: Date(timeIntervalSince1970: 0), maxAge: 0, path: "/", secure: secure, httpOnly: true, sameSite: .lax)
    }
}
