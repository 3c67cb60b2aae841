/// Message headers (NATS 2.2+ header block). Keys are case-sensitive as NATS treats them;
/// a key may carry several values.
public struct BusHeaders: Sendable, Hashable, ExpressibleByDictionaryLiteral {
    /// Header entries in insertion order.
    public private(set) var entries: [(key: String, value: String)] = []

    public init() {}

    public init(dictionaryLiteral elements: (String, String)...) {
        for (k, v) in elements { add(k, v) }
    }

    /// The first value of `key`, if any.
    public subscript(_ key: String) -> String? {
        get { entries.first(where: { $0.key == key })?.value }
        set {
            entries.removeAll { $0.key == key }
            if let newValue { entries.append((key, newValue)) }
        }
    }

    /// Appends a value for `key`, keeping the ones already there.
    public mutating func add(_ key: String, _ value: String) { entries.append((key, value)) }

    public var isEmpty: Bool { entries.isEmpty }

    public static func == (l: Self, r: Self) -> Bool {
        l.entries.count == r.entries.count && zip(l.entries, r.entries).allSatisfy { $0.key == $1.key && $0.value == $1.value }
    }

    public func hash(into hasher: inout Hasher) {
        for e in entries {
            hasher.combine(e.key)
            hasher.combine(e.value)
        }
    }
}

/// A message received from the bus. The payload is copied out of nats.c, so the value is independent of it.
public struct BusMessage: Sendable {
    public var subject: String
    /// The reply subject, for requests.
    public var reply: String?
    public var headers: BusHeaders
    public var payload: [UInt8]

    public init(subject: String, reply: String? = nil, headers: BusHeaders = BusHeaders(), payload: [UInt8]) {
        self.subject = subject
        self.reply = reply
        self.headers = headers
        self.payload = payload
    }
}

/// Header names defined by NATS and the service API (ADR-32).
public enum BusHeaderName {
    /// A human-readable error from a service endpoint.
    public static let serviceError = "Nats-Service-Error"
    /// A numeric error code from a service endpoint (HTTP-like).
    public static let serviceErrorCode = "Nats-Service-Error-Code"
    /// The request id a caller attaches for tracing across services.
    public static let requestID = "Mesh-Request-Id"
}
