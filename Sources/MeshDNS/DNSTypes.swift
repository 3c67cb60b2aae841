import MeshNet

/// A resource record type (RFC 1035 §3.2.2 and later registrations); open so unknown types survive a round trip.
public struct DNSRecordType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The 16-bit code on the wire.
    public var rawValue: UInt16
    /// Wraps a type code.
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// IPv4 host address.
    public static let a = Self(rawValue: 1)
    /// Authoritative name server.
    public static let ns = Self(rawValue: 2)
    /// Canonical name (alias).
    public static let cname = Self(rawValue: 5)
    /// Start of authority.
    public static let soa = Self(rawValue: 6)
    /// Domain name pointer.
    public static let ptr = Self(rawValue: 12)
    /// Mail exchange.
    public static let mx = Self(rawValue: 15)
    /// Text strings.
    public static let txt = Self(rawValue: 16)
    /// IPv6 host address (RFC 3596).
    public static let aaaa = Self(rawValue: 28)
    /// Service locator (RFC 2782).
    public static let srv = Self(rawValue: 33)
    /// EDNS0 pseudo-record (RFC 6891).
    public static let opt = Self(rawValue: 41)
    /// Incremental zone transfer (query type only).
    public static let ixfr = Self(rawValue: 251)
    /// Full zone transfer (query type only).
    public static let axfr = Self(rawValue: 252)
    /// Any type (query type only).
    public static let any = Self(rawValue: 255)

    public var description: String {
        switch self {
        case .a: "A"
        case .ns: "NS"
        case .cname: "CNAME"
        case .soa: "SOA"
        case .ptr: "PTR"
        case .mx: "MX"
        case .txt: "TXT"
        case .aaaa: "AAAA"
        case .srv: "SRV"
        case .opt: "OPT"
        case .ixfr: "IXFR"
        case .axfr: "AXFR"
        case .any: "ANY"
        default: "TYPE\(rawValue)"
        }
    }
}

/// A record class (RFC 1035 §3.2.4); only `IN` carries data here, `ANY` is accepted in questions.
public struct DNSClass: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The 16-bit code on the wire.
    public var rawValue: UInt16
    /// Wraps a class code.
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// The Internet.
    public static let `in` = Self(rawValue: 1)
    /// Chaos (used for `version.bind` style queries).
    public static let chaos = Self(rawValue: 3)
    /// Hesiod.
    public static let hesiod = Self(rawValue: 4)
    /// Any class (query class only).
    public static let any = Self(rawValue: 255)

    public var description: String {
        switch self {
        case .in: "IN"
        case .chaos: "CH"
        case .hesiod: "HS"
        case .any: "ANY"
        default: "CLASS\(rawValue)"
        }
    }
}

/// The operation a message asks for (RFC 1035 §4.1.1, RFC 1996, RFC 2136).
public struct DNSOpcode: RawRepresentable, Hashable, Sendable {
    /// The 4-bit code.
    public var rawValue: UInt8
    /// Wraps an opcode; values above 15 are masked when written.
    public init(rawValue: UInt8) { self.rawValue = rawValue & 0x0f }

    /// A standard query.
    public static let query = Self(rawValue: 0)
    /// An inverse query (obsolete).
    public static let inverseQuery = Self(rawValue: 1)
    /// A server status request.
    public static let status = Self(rawValue: 2)
    /// A zone change notification.
    public static let notify = Self(rawValue: 4)
    /// A dynamic update.
    public static let update = Self(rawValue: 5)
}

/// A response code, including the EDNS0 extended codes (12 bits: 4 in the header, 8 in the OPT record).
public struct DNSResponseCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The full 12-bit code.
    public var rawValue: UInt16
    /// Wraps a response code.
    public init(rawValue: UInt16) { self.rawValue = rawValue & 0x0fff }

    /// No error.
    public static let noError = Self(rawValue: 0)
    /// The server could not interpret the query.
    public static let formatError = Self(rawValue: 1)
    /// The server failed to process the query.
    public static let serverFailure = Self(rawValue: 2)
    /// The name does not exist.
    public static let nameError = Self(rawValue: 3)
    /// The server does not implement the requested operation.
    public static let notImplemented = Self(rawValue: 4)
    /// The server refuses to answer, by policy.
    public static let refused = Self(rawValue: 5)
    /// The EDNS version in the query is not supported (RFC 6891 §9); needs an OPT record to be expressed.
    public static let badVersion = Self(rawValue: 16)

    public var description: String {
        switch self {
        case .noError: "NOERROR"
        case .formatError: "FORMERR"
        case .serverFailure: "SERVFAIL"
        case .nameError: "NXDOMAIN"
        case .notImplemented: "NOTIMP"
        case .refused: "REFUSED"
        case .badVersion: "BADVERS"
        default: "RCODE\(rawValue)"
        }
    }
}

/// The fixed 12-byte message header, minus the section counts (those follow from the sections themselves).
public struct DNSHeader: Hashable, Sendable {
    /// Matches a response to its query.
    public var id: UInt16
    /// QR: set in responses.
    public var isResponse: Bool
    /// The kind of query.
    public var opcode: DNSOpcode
    /// AA: the answer comes from an authority for the name.
    public var isAuthoritative: Bool
    /// TC: the message was cut to fit the transport; the client should retry over TCP.
    public var isTruncated: Bool
    /// RD: the client asks for recursion.
    public var recursionDesired: Bool
    /// RA: the server offers recursion.
    public var recursionAvailable: Bool
    /// AD: authenticated data (RFC 4035).
    public var authenticData: Bool
    /// CD: checking disabled (RFC 4035).
    public var checkingDisabled: Bool
    /// The low four bits of the response code; see ``DNSMessage/responseCode`` for the full value.
    public var rcodeLow: UInt8

    /// A header with every flag clear.
    public init(id: UInt16 = 0, isResponse: Bool = false, opcode: DNSOpcode = .query, isAuthoritative: Bool = false,
                isTruncated: Bool = false, recursionDesired: Bool = false, recursionAvailable: Bool = false,
                authenticData: Bool = false, checkingDisabled: Bool = false, rcodeLow: UInt8 = 0) {
        self.id = id
        self.isResponse = isResponse
        self.opcode = opcode
        self.isAuthoritative = isAuthoritative
        self.isTruncated = isTruncated
        self.recursionDesired = recursionDesired
        self.recursionAvailable = recursionAvailable
        self.authenticData = authenticData
        self.checkingDisabled = checkingDisabled
        self.rcodeLow = rcodeLow & 0x0f
    }

    /// Decodes the two flag bytes.
    public init(id: UInt16, flags: UInt16) {
        self.init(id: id,
                  isResponse: flags & 0x8000 != 0,
                  opcode: DNSOpcode(rawValue: UInt8(flags >> 11 & 0x0f)),
                  isAuthoritative: flags & 0x0400 != 0,
                  isTruncated: flags & 0x0200 != 0,
                  recursionDesired: flags & 0x0100 != 0,
                  recursionAvailable: flags & 0x0080 != 0,
                  authenticData: flags & 0x0020 != 0,
                  checkingDisabled: flags & 0x0010 != 0,
                  rcodeLow: UInt8(flags & 0x000f))
    }

    /// The two flag bytes as a big-endian word.
    public var flags: UInt16 {
        var f = UInt16(opcode.rawValue & 0x0f) << 11 | UInt16(rcodeLow & 0x0f)
        if isResponse { f |= 0x8000 }
        if isAuthoritative { f |= 0x0400 }
        if isTruncated { f |= 0x0200 }
        if recursionDesired { f |= 0x0100 }
        if recursionAvailable { f |= 0x0080 }
        if authenticData { f |= 0x0020 }
        if checkingDisabled { f |= 0x0010 }
        return f
    }
}

/// One entry of the question section.
public struct DNSQuestion: Hashable, Sendable {
    /// The name asked about, in the client's case.
    public var name: DNSName
    /// The record type asked for.
    public var type: DNSRecordType
    /// The class asked for.
    public var recordClass: DNSClass

    /// Creates a question.
    public init(name: DNSName, type: DNSRecordType, recordClass: DNSClass = .in) {
        self.name = name
        self.type = type
        self.recordClass = recordClass
    }
}

/// The fields of an SOA record (RFC 1035 §3.3.13).
public struct DNSSOA: Hashable, Sendable {
    /// The primary name server for the zone.
    public var mname: DNSName
    /// The mailbox of the person responsible, with the `@` written as a dot.
    public var rname: DNSName
    /// The zone's version; secondaries compare it with serial-number arithmetic.
    public var serial: UInt32
    /// Seconds between a secondary's refresh checks.
    public var refresh: UInt32
    /// Seconds before a failed refresh is retried.
    public var retry: UInt32
    /// Seconds after which a secondary stops answering without a refresh.
    public var expire: UInt32
    /// The negative-caching TTL (RFC 2308 §4).
    public var minimum: UInt32

    /// Creates SOA data.
    public init(mname: DNSName, rname: DNSName, serial: UInt32, refresh: UInt32, retry: UInt32, expire: UInt32,
                minimum: UInt32) {
        self.mname = mname
        self.rname = rname
        self.serial = serial
        self.refresh = refresh
        self.retry = retry
        self.expire = expire
        self.minimum = minimum
    }
}

/// The data of a resource record. Types this codec does not interpret keep their raw bytes (RFC 3597).
public enum DNSRecordData: Hashable, Sendable {
    /// An IPv4 address (type A).
    case a(IPv4Address)
    /// An IPv6 address (type AAAA).
    case aaaa(IPv6Address)
    /// A name server (type NS).
    case ns(DNSName)
    /// An alias target (type CNAME).
    case cname(DNSName)
    /// A pointer target (type PTR).
    case ptr(DNSName)
    /// Start of authority (type SOA).
    case soa(DNSSOA)
    /// Uninterpreted bytes of any other type.
    case raw([UInt8])
}

/// A resource record of the answer, authority or additional section (never the OPT pseudo-record, which
/// ``DNSMessage/edns`` carries).
public struct DNSResourceRecord: Hashable, Sendable {
    /// The owner name.
    public var name: DNSName
    /// The record type; must agree with ``data`` for the interpreted types.
    public var type: DNSRecordType
    /// The class.
    public var recordClass: DNSClass
    /// Seconds the record may be cached.
    public var ttl: UInt32
    /// The record data.
    public var data: DNSRecordData

    /// Creates a record whose type is implied by its data.
    public init(name: DNSName, ttl: UInt32, data: DNSRecordData, recordClass: DNSClass = .in) {
        self.name = name
        self.ttl = ttl
        self.data = data
        self.recordClass = recordClass
        switch data {
        case .a: type = .a
        case .aaaa: type = .aaaa
        case .ns: type = .ns
        case .cname: type = .cname
        case .ptr: type = .ptr
        case .soa: type = .soa
        case .raw: type = DNSRecordType(rawValue: 0)
        }
    }

    /// Creates a record of an explicit type, for data kept raw.
    public init(name: DNSName, type: DNSRecordType, recordClass: DNSClass = .in, ttl: UInt32, data: DNSRecordData) {
        self.name = name
        self.type = type
        self.recordClass = recordClass
        self.ttl = ttl
        self.data = data
    }
}

/// One EDNS0 option (RFC 6891 §6.1.2), kept uninterpreted.
public struct DNSEDNSOption: Hashable, Sendable {
    /// The option code.
    public var code: UInt16
    /// The option payload.
    public var data: [UInt8]

    /// Creates an option.
    public init(code: UInt16, data: [UInt8]) {
        self.code = code
        self.data = data
    }
}

/// The EDNS0 OPT pseudo-record of a message (RFC 6891 §6.1).
public struct DNSEDNS: Hashable, Sendable {
    /// The largest UDP payload the sender can receive (the OPT record's CLASS field).
    public var udpPayloadSize: UInt16
    /// The upper eight bits of the 12-bit response code.
    public var extendedRCode: UInt8
    /// The EDNS version; only 0 is defined.
    public var version: UInt8
    /// DO: the sender can handle DNSSEC records (RFC 3225).
    public var dnssecOK: Bool
    /// Options in the order they appeared.
    public var options: [DNSEDNSOption]

    /// Creates an OPT record's content.
    public init(udpPayloadSize: UInt16 = 1232, extendedRCode: UInt8 = 0, version: UInt8 = 0, dnssecOK: Bool = false,
                options: [DNSEDNSOption] = []) {
        self.udpPayloadSize = udpPayloadSize
        self.extendedRCode = extendedRCode
        self.version = version
        self.dnssecOK = dnssecOK
        self.options = options
    }

    /// The wire size of the OPT record: root name (1) + type, class, TTL, rdlength (10) + options.
    var wireSize: Int {
        11 + options.reduce(0) { $0 + 4 + $1.data.count }
    }
}
