import Hummingbird
import Logging

/// The baseline of the gateway benchmark (scripts/bench-gateway.sh): a plain Hummingbird
/// application with one route, `GET /hello`, on the same machine and in the same run, so the
/// gateway's figures can be read as a fraction of what Hummingbird itself does here.
///
/// Usage: GatewayBench [port]   (default 18081)
let port = CommandLine.arguments.dropFirst().first.flatMap(Int.init) ?? 18081
let router = Router()
router.get("/hello") { _, _ in "hello" }
var logger = Logger(label: "GatewayBench")
logger.logLevel = .warning
let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port), backlog: 1024), logger: logger)
try await app.runService()
