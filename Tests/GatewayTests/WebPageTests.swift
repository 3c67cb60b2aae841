import Foundation
import GatewayCore
import Hummingbird
import HummingbirdTesting
import MeshAuth
import MeshTestSupport
import Testing

extension GatewayTests {
    /// The web page's files: served with the right types and the page's security headers (also at
    /// `/vpn/mesh` without a slash), every file the page names exists, and the scripts never parse
    /// HTML or run strings as code. The page's behaviour is tested in a real browser
    /// (Tests/browser, docs/web.md).
    @Test func webPageFilesAndHeaders() async throws {
        let nats = try TestNatsServer(name: "gw-web")
        let bus = try await TestEnvironment.connectBus("gw-web", url: nats.url)
        let verifier = await TokenVerifier(keys: try JWTKeyMaterial(hmacSecret: testSecret))
        let api = GatewayAPI(configuration: GatewayConfiguration(), bus: bus, verifier: verifier, logger: TestEnvironment.logger("gateway"))
        let app = Application(router: GatewayApp.router(api: api), logger: TestEnvironment.logger("gateway"))
        let root = try #require(GatewayApp.webRoot)
        let files = try FileManager.default.contentsOfDirectory(atPath: root).sorted()
        #expect(files == ["api.js", "app.css", "app.js", "dom.js", "index.html", "link.html", "link.js", "live.js", "policies.js", "session.js"], "\(files)")

        try await app.test(.router) { client in
            let types = ["html": "text/html", "js": "text/javascript", "css": "text/css"]
            for path in ["/vpn/mesh", "/vpn/mesh/"] + files.map({ "/vpn/mesh/\($0)" }) {
                let r = try await client.send(.get, path)
                #expect(r.status == 200, "\(path): \(r.status)")
                let ext = path.hasSuffix("/") || path == "/vpn/mesh" ? "html" : String(path.split(separator: ".").last ?? "")
                #expect(r.headers[.contentType]?.hasPrefix(types[ext] ?? "?") == true, "\(path): \(r.headers[.contentType] ?? "none")")
                #expect(r.headers[.contentSecurityPolicy] == WebPageHeadersMiddleware<GatewayRequestContext>.contentSecurityPolicy, "\(path)")
                #expect(r.headers[.xContentTypeOptions] == "nosniff")
                #expect(r.headers[HTTPHeaderName("Referrer-Policy")!] == "no-referrer")
                #expect(r.headers[HTTPHeaderName("X-Frame-Options")!] == "DENY")
                #expect(r.headers[.cacheControl] == "no-cache")
            }
            // The API keeps its own headers; a missing asset is the JSON 404.
            let ui = try await client.send(.get, "/api/mesh/ui-config")
            #expect(ui.status == 200 && ui.headers[.contentSecurityPolicy] == nil)
            let missing = try await client.send(.get, "/vpn/mesh/nothing.js")
            #expect(missing.status == 404 && missing.errorCode == "not_found")
        }

        // Every file index.html and the modules refer to is there; nothing inline (the policy would block it).
        let index = try String(contentsOfFile: root + "/index.html", encoding: .utf8)
        let referenced = matches(#"(?:src|href)="/vpn/mesh/([^"]+)""#, in: index)
        #expect(Set(referenced) == ["app.css", "app.js"], "\(referenced)")
        #expect(!index.contains("<style") && !index.contains(" style=") && !index.contains("onclick") && !index.contains("<script>"))
        for file in files where file.hasSuffix(".js") {
            let code = try String(contentsOfFile: root + "/" + file, encoding: .utf8)
            for module in matches(#"from '\./([^']+)'"#, in: code) {
                #expect(files.contains(module), "\(file) imports \(module), which is missing")
            }
            for banned in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "localStorage",
                           "?token=", "&token="] {
                #expect(!code.contains(banned), "\(file) uses \(banned)")
            }
        }
        await bus.close()
        await nats.stop()
    }
}

/// The first capture group of every match of `pattern`.
private func matches(_ pattern: String, in text: String) -> [String] {
    guard let re = try? NSRegularExpression(pattern: pattern) else { return [] }
    return re.matches(in: text, range: NSRange(text.startIndex..., in: text)).compactMap { m in
        Range(m.range(at: 1), in: text).map { String(text[$0]) }
    }
}
