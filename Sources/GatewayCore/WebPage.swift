import Hummingbird

/// Security and caching headers for the web page at `/vpn/mesh` (docs/web.md).
///
/// The page runs only its own scripts and styles (no inline code), shows the QR code as an image
/// from a `data:` URL and offers the `.conf` file from a `blob:` URL; the Content-Security-Policy
/// allows exactly that, so injected markup could run nothing. Nothing is framed, no referrer is sent,
/// and the files are revalidated on every load (they are small, and a new gateway version must
/// not meet an old script).
public struct WebPageHeadersMiddleware<Context: RequestContext>: RouterMiddleware {
    /// The path the page is served under.
    let basePath: String

    /// The policy of the page: only this origin's scripts, styles and API; images also from `data:` and `blob:`.
    public static var contentSecurityPolicy: String {
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
            + "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    }

    /// Adds the headers to every response under `basePath`.
    public init(basePath: String = "/vpn/mesh") {
        self.basePath = basePath
    }

    /// Passes the request on and adds the headers to the response when its path is the page's.
    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var response = try await next(request, context)
        let path = request.uri.path
        guard path == basePath || path.hasPrefix(basePath + "/") else { return response }
        response.headers[.contentSecurityPolicy] = Self.contentSecurityPolicy
        response.headers[.xContentTypeOptions] = "nosniff"
        response.headers[referrerPolicyHeader] = "no-referrer"
        response.headers[frameOptionsHeader] = "DENY"
        if response.headers[.cacheControl] == nil { response.headers[.cacheControl] = "no-cache" }
        return response
    }
}

/// `Referrer-Policy` (not among the predefined header names).
let referrerPolicyHeader = HTTPHeaderName("Referrer-Policy")!
/// `X-Frame-Options` (not among the predefined header names).
let frameOptionsHeader = HTTPHeaderName("X-Frame-Options")!
