import BenchSupport
import Foundation
import GatewayCore
import MeshDomain
import MeshProto

/// JSON writing and ISO 8601 timestamps, in process, no servers (scripts/bench-json.sh;
/// docs/benchmarks.md, "JSON and timestamps").
///
/// The Gateway's device list is written four ways from the same devices, and each must give the
/// same JSON (checked before timing):
/// - `JSONWriter`: the hand-written writer the Gateway uses (`DeviceListJSON`);
/// - `JSONEncoder`, explicit `CodingKeys`, `encode(to:)` written out so that absent values are `null`
///   as the API documents them (byte for byte the same output as `JSONWriter`);
/// - `JSONEncoder`, explicit `CodingKeys`, synthesised `encode(to:)` (absent values left out: not the
///   API's form, shown as the encoder's best case);
/// - `JSONEncoder` with `.convertToSnakeCase` and synthesised coding (the slow path an earlier
///   end-to-end comparison used).
/// Then one timestamp is formatted three ways: `Timestamp.iso(ms:)`, `Date.ISO8601FormatStyle`
/// and a shared `ISO8601DateFormatter`.
///
/// Usage: JSONBench [--devices 50,1000] [--rounds 15] [--round-ms 100]
let options = Options()
let sizes = options.ints("devices", [50, 1000])
let rounds = options.int("rounds", 15)
let roundNanos = UInt64(options.int("round-ms", 100)) * 1_000_000

// MARK: The encoder's models

/// A device with explicit coding keys and nulls written out (the API's form).
struct DeviceKeyed: Encodable {
    var id, label, slug, dnsName, type: String
    var meshIps: [String]
    var createdAt: String
    var lastHandshakeAt: String?
    var online: Bool
    var rxBytes, txBytes: UInt64
    var endpoint: String?
    var ownerUserId, ownerName, status: String
    var suspendReason, suspendedAt, expiresAt: String?
    var configOutdated: Bool
    var configOutdatedReason: String?
    var tags: [String]

    enum CodingKeys: String, CodingKey {
        case id, label, slug, dnsName = "dns_name", type, meshIps = "mesh_ips", createdAt = "created_at"
        case lastHandshakeAt = "last_handshake_at", online, rxBytes = "rx_bytes", txBytes = "tx_bytes", endpoint
        case ownerUserId = "owner_user_id", ownerName = "owner_name", status, suspendReason = "suspend_reason"
        case suspendedAt = "suspended_at", expiresAt = "expires_at"
        case configOutdated = "config_outdated", configOutdatedReason = "config_outdated_reason", tags
    }

    init(_ d: Mesh_V1_Device) {
        id = d.id
        label = d.label
        slug = d.slug
        dnsName = d.dnsName
        type = d.type.key
        meshIps = [d.ipv4, d.ipv6].filter { !$0.isEmpty }
        createdAt = Timestamp.iso(ms: d.createdAtMs)
        lastHandshakeAt = Timestamp.isoOrNil(ms: d.lastHandshakeAtMs)
        online = d.online
        rxBytes = d.rxBytes
        txBytes = d.txBytes
        endpoint = d.endpoint.nilIfEmpty
        ownerUserId = d.ownerUserID
        ownerName = d.ownerName
        status = d.status == .unspecified ? "active" : d.status.key
        suspendReason = d.suspendReason == .unspecified ? nil : d.suspendReason.key
        suspendedAt = Timestamp.isoOrNil(ms: d.suspendedAtMs)
        expiresAt = Timestamp.isoOrNil(ms: d.expiresAtMs)
        configOutdated = d.configOutdated
        configOutdatedReason = d.configOutdatedReason.nilIfEmpty
        tags = d.tags
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(label, forKey: .label)
        try c.encode(slug, forKey: .slug)
        try c.encode(dnsName, forKey: .dnsName)
        try c.encode(type, forKey: .type)
        try c.encode(meshIps, forKey: .meshIps)
        try c.encode(createdAt, forKey: .createdAt)
        try c.encode(lastHandshakeAt, forKey: .lastHandshakeAt)
        try c.encode(online, forKey: .online)
        try c.encode(rxBytes, forKey: .rxBytes)
        try c.encode(txBytes, forKey: .txBytes)
        try c.encode(endpoint, forKey: .endpoint)
        try c.encode(ownerUserId, forKey: .ownerUserId)
        try c.encode(ownerName, forKey: .ownerName)
        try c.encode(status, forKey: .status)
        try c.encode(suspendReason, forKey: .suspendReason)
        try c.encode(suspendedAt, forKey: .suspendedAt)
        try c.encode(expiresAt, forKey: .expiresAt)
        try c.encode(configOutdated, forKey: .configOutdated)
        try c.encode(configOutdatedReason, forKey: .configOutdatedReason)
        try c.encode(tags, forKey: .tags)
    }
}

struct DeviceListKeyed: Encodable {
    var devices: [DeviceKeyed]
}

/// The same keys, synthesised coding (nil members are left out).
struct DeviceSynthesized: Encodable {
    var id, label, slug, dnsName, type: String
    var meshIps: [String]
    var createdAt: String
    var lastHandshakeAt: String?
    var online: Bool
    var rxBytes, txBytes: UInt64
    var endpoint: String?
    var ownerUserId, ownerName, status: String
    var suspendReason, suspendedAt, expiresAt: String?
    var configOutdated: Bool
    var configOutdatedReason: String?
    var tags: [String]

    enum CodingKeys: String, CodingKey {
        case id, label, slug, dnsName = "dns_name", type, meshIps = "mesh_ips", createdAt = "created_at"
        case lastHandshakeAt = "last_handshake_at", online, rxBytes = "rx_bytes", txBytes = "tx_bytes", endpoint
        case ownerUserId = "owner_user_id", ownerName = "owner_name", status, suspendReason = "suspend_reason"
        case suspendedAt = "suspended_at", expiresAt = "expires_at"
        case configOutdated = "config_outdated", configOutdatedReason = "config_outdated_reason", tags
    }

    init(_ d: DeviceKeyed) {
        (id, label, slug, dnsName, type) = (d.id, d.label, d.slug, d.dnsName, d.type)
        (meshIps, createdAt, lastHandshakeAt, online) = (d.meshIps, d.createdAt, d.lastHandshakeAt, d.online)
        (rxBytes, txBytes, endpoint, ownerUserId) = (d.rxBytes, d.txBytes, d.endpoint, d.ownerUserId)
        (ownerName, status, suspendReason) = (d.ownerName, d.status, d.suspendReason)
        (suspendedAt, expiresAt, tags) = (d.suspendedAt, d.expiresAt, d.tags)
        (configOutdated, configOutdatedReason) = (d.configOutdated, d.configOutdatedReason)
    }
}

struct DeviceListSynthesized: Encodable {
    var devices: [DeviceSynthesized]
}

/// Camel-case names turned into snake case by the encoder's key strategy.
struct DeviceSnake: Encodable {
    var id, label, slug, dnsName, type: String
    var meshIps: [String]
    var createdAt: String
    var lastHandshakeAt: String?
    var online: Bool
    var rxBytes, txBytes: UInt64
    var endpoint: String?
    var ownerUserId, ownerName, status: String
    var suspendReason, suspendedAt, expiresAt: String?
    var configOutdated: Bool
    var configOutdatedReason: String?
    var tags: [String]

    init(_ d: DeviceKeyed) {
        (id, label, slug, dnsName, type) = (d.id, d.label, d.slug, d.dnsName, d.type)
        (meshIps, createdAt, lastHandshakeAt, online) = (d.meshIps, d.createdAt, d.lastHandshakeAt, d.online)
        (rxBytes, txBytes, endpoint, ownerUserId) = (d.rxBytes, d.txBytes, d.endpoint, d.ownerUserId)
        (ownerName, status, suspendReason) = (d.ownerName, d.status, d.suspendReason)
        (suspendedAt, expiresAt, tags) = (d.suspendedAt, d.expiresAt, d.tags)
        (configOutdated, configOutdatedReason) = (d.configOutdated, d.configOutdatedReason)
    }
}

struct DeviceListSnake: Encodable {
    var devices: [DeviceSnake]
}

// MARK: Input

/// `n` devices as ProvisionSvc returns them: about half have handshaken (timestamp, endpoint).
func devices(_ n: Int) -> [Mesh_V1_Device] {
    (0..<n).map { i in
        var d = Mesh_V1_Device()
        d.id = UUID().uuidString.lowercased()
        d.tenantID = "0b6d2c9e-5f1a-4e0b-9c8d-7a6b5c4d3e2f"
        d.ownerUserID = "6f1e2d3c-4b5a-4978-8c6d-5e4f3a2b1c0d"
        d.ownerName = "Ana Lima"
        d.perPeerStats = true  // a Pro plan: endpoint and traffic are written
        d.tags = i % 3 == 0 ? ["laptops", "eu"] : []
        d.label = "Laptop \(i) of \"Ana\""
        d.slug = "laptop-\(i)-of-ana"
        d.dnsName = "laptop-\(i)-of-ana.quazzar.mesh"
        d.type = [.iphone, .android, .laptop, .other][i % 4]
        d.ipv4 = "100.64.\(i / 250).\(i % 250 + 2)"
        d.ipv6 = "fd12:3456:789a::\(String(i + 2, radix: 16))"
        d.createdAtMs = 1_764_000_000_000 + Int64(i) * 61_001
        if i % 2 == 0 {
            d.lastHandshakeAtMs = 1_764_050_000_000 + Int64(i) * 1_003
            d.endpoint = "203.0.113.\(i % 200 + 1):\(40000 + i)"
            d.online = true
            d.rxBytes = UInt64(i) * 123_456_789
            d.txBytes = UInt64(i) * 98_765_432
        }
        if i % 25 == 7 {
            d.status = .suspended
            d.suspendReason = .admin
            d.suspendedAtMs = 1_764_060_000_000 + Int64(i)
        }
        if i % 5 == 1 { d.expiresAtMs = 1_766_000_000_000 + Int64(i) * 1_000 }
        if i % 10 == 3 {
            d.configOutdated = true
            d.configOutdatedReason = "node \"edge-2\" was removed"
        }
        return d
    }
}

/// What `DeviceListJSON` writes (`{"devices":[...]}`), as `JSONBody.response` does.
func writeList(_ devices: [DeviceJSON]) -> [UInt8] {
    var w = JSONWriter()
    w.object { w in
        w.key("devices"); w.array(devices)
    }
    return w.bytes
}

// MARK: Timing

/// The median over `rounds` rounds of the time per call of `body`, each round about `roundNanos`
/// long, after one warm-up round.
func measure(_ body: () throws -> Int) rethrows -> (nanos: Double, bytes: Int) {
    var bytes = 0
    var calls = 1
    // Warm up and size a round.
    while true {
        let t0 = monotonicNanos()
        for _ in 0..<calls { bytes = try body() }
        let t = monotonicNanos() - t0
        if t >= roundNanos / 4 {
            calls = max(1, Int(Double(calls) * Double(roundNanos) / Double(t)))
            break
        }
        calls *= 2
    }
    var perCall: [Double] = []
    for _ in 0..<rounds {
        let t0 = monotonicNanos()
        for _ in 0..<calls { bytes = try body() }
        perCall.append(Double(monotonicNanos() - t0) / Double(calls))
    }
    perCall.sort()
    return (perCall[perCall.count / 2], bytes)
}

/// Two JSON documents with the same content (parsed and compared as values).
func sameJSON(_ a: some DataProtocol, _ b: some DataProtocol) -> Bool {
    guard let x = try? JSONSerialization.jsonObject(with: Data(a)) as? NSDictionary,
          let y = try? JSONSerialization.jsonObject(with: Data(b)) as? NSDictionary else { return false }
    return x.isEqual(y)
}

func row(_ name: String, _ r: (nanos: Double, bytes: Int), baseline: Double) -> String {
    let mbps = Double(r.bytes) / r.nanos * 1e9 / 1e6
    return pad(name, 52) + pad(formatNanos(r.nanos), 12) + pad(String(format: "%.0f MB/s", mbps), 12)
        + String(format: "%.2f×", r.nanos / baseline)
}

say("JSONBench: \(machineLine())")
let keyedEncoder = JSONEncoder()
// Without .sortedKeys this encoder writes an object's members in hash order, which changes from
// one process to the next; sorted, the output is stable (but alphabetical, not the API's order).
let sortedEncoder = JSONEncoder()
sortedEncoder.outputFormatting = [.sortedKeys]
let snakeEncoder = JSONEncoder()
snakeEncoder.keyEncodingStrategy = .convertToSnakeCase
var failed = false

for n in sizes {
    let input = devices(n)
    let writerModel = input.map(DeviceJSON.init)
    let keyed = DeviceListKeyed(devices: input.map(DeviceKeyed.init))
    let synthesized = DeviceListSynthesized(devices: keyed.devices.map(DeviceSynthesized.init))
    let snake = DeviceListSnake(devices: keyed.devices.map(DeviceSnake.init))

    // The outputs first: the same JSON, or the comparison means nothing.
    let reference = writeList(writerModel)
    let keyedBytes = try keyedEncoder.encode(keyed)
    let snakeBytes = try snakeEncoder.encode(snake)
    let identical = Array(keyedBytes) == reference
    let sortedBytes = try sortedEncoder.encode(keyed)
    if !sameJSON(reference, keyedBytes) || !sameJSON(reference, sortedBytes) {
        say("  error: JSONEncoder (explicit keys, nulls) and JSONWriter disagree for \(n) devices")
        failed = true
    }
    if !sameJSON(try keyedEncoder.encode(synthesized), snakeBytes) {
        say("  error: JSONEncoder with .convertToSnakeCase gives other JSON for \(n) devices")
        failed = true
    }

    say("")
    say("device list, \(n) devices (\(reference.count) bytes; JSONEncoder with explicit keys "
        + (identical ? "byte for byte the same" : "the same JSON, members in another order") + ")")
    say(pad("", 52) + pad("per list", 12) + pad("rate", 12) + "× JSONWriter")
    let base = measure { writeList(writerModel).count }
    say(row("JSONWriter (the Gateway's)", base, baseline: base.nanos))
    say(row("JSONEncoder, explicit CodingKeys, nulls written", try measure { try keyedEncoder.encode(keyed).count }, baseline: base.nanos))
    say(row("JSONEncoder, explicit CodingKeys, nulls written, sorted", try measure { try sortedEncoder.encode(keyed).count },
            baseline: base.nanos))
    say(row("JSONEncoder, explicit CodingKeys, synthesised", try measure { try keyedEncoder.encode(synthesized).count }, baseline: base.nanos))
    say(row("JSONEncoder, .convertToSnakeCase", try measure { try snakeEncoder.encode(snake).count }, baseline: base.nanos))
    say(row("protobuf → models (both ways; 2 timestamps a device)", measure { () -> Int in
        DeviceListKeyed(devices: input.map(DeviceKeyed.init)).devices.count
    }, baseline: base.nanos))
}

// MARK: Timestamps

let stamps = (0..<1000).map { 1_764_000_000_000 + Int64($0) * 86_400_123 }
let style = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
let formatter = ISO8601DateFormatter()
formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
formatter.timeZone = TimeZone(identifier: "UTC")
// The same text from all three, or a count of the timestamps where one differs.
var styleDiffers = 0, formatterDiffers = 0
for ms in stamps {
    let date = Date(unixMilliseconds: ms)
    let a = Timestamp.iso(ms: ms)
    if date.formatted(style) != a {
        if styleDiffers == 0 { say("  e.g. \(ms) ms: \(a) by Timestamp, \(date.formatted(style)) by ISO8601FormatStyle") }
        styleDiffers += 1
    }
    if formatter.string(from: date) != a { formatterDiffers += 1 }
}
say("")
say("ISO 8601 with milliseconds, 1,000 timestamps (ISO8601FormatStyle differs from Timestamp in \(styleDiffers), "
    + "ISO8601DateFormatter in \(formatterDiffers))")
say(pad("", 52) + pad("per 1,000", 12) + pad("", 12) + "× Timestamp")
let tBase = measure { stamps.reduce(0) { $0 + Timestamp.iso(ms: $1).utf8.count } }
say(row("Timestamp.iso(ms:)", tBase, baseline: tBase.nanos))
say(row("Date.ISO8601FormatStyle", measure { stamps.reduce(0) { $0 + Date(unixMilliseconds: $1).formatted(style).utf8.count } },
        baseline: tBase.nanos))
say(row("ISO8601DateFormatter (one, shared)", measure { stamps.reduce(0) { $0 + formatter.string(from: Date(unixMilliseconds: $1)).utf8.count } },
        baseline: tBase.nanos))
say(row("ISO8601DateFormatter.string(from:timeZone:formatOptions:)", measure {
    stamps.reduce(0) {
        $0 + ISO8601DateFormatter.string(from: Date(unixMilliseconds: $1), timeZone: .gmt,
                                         formatOptions: [.withInternetDateTime, .withFractionalSeconds]).utf8.count
    }
}, baseline: tBase.nanos))
if failed { exit(1) }
