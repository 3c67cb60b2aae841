import MeshNet
import NIOCore

/// What the server does with a name outside the mesh zone.
public enum MeshDNSOutsideZonePolicy: Sendable, Hashable {
    /// Answer REFUSED: the server is authoritative for the mesh zone only.
    case refuse
    /// Relay the query unchanged (apart from its id) to these resolvers, tried in order, and relay the reply.
    /// Hosts must be address literals: the forwarder cannot resolve a name without a resolver.
    case forward(to: [HostPort])
}

/// Whether the client at an address may see a name of the zone (see ``MeshDNSServerConfiguration/visibility``).
public typealias MeshDNSVisibility = @Sendable (_ client: IPAddress, _ name: DNSName) -> Bool

/// The transport a query arrived on; it decides the largest reply.
public enum MeshDNSTransport: Sendable, Hashable {
    /// Replies are limited to 512 bytes, or the client's EDNS0 payload size capped by the server's own.
    case udp
    /// Replies may use the full 65,535 bytes a length prefix can describe.
    case tcp
}

/// What the server should do with one received message.
public enum MeshDNSOutcome: Sendable, Hashable {
    /// Send this reply.
    case reply(DNSMessage, maxSize: Int)
    /// Send nothing: the message is too short to have an id, or is itself a response (QR=1), and answering
    /// either would let a forged source address turn the server into a reflector.
    case drop
    /// The query is well formed and outside the zone, and the policy is to forward it.
    case forward
}

/// The protocol logic of the mesh DNS server, apart from any socket: message in, decision out.
///
/// Multiple questions: a query with a question count other than one gets FORMERR, as BIND and Knot answer.
/// RFC 1035 allows several questions but never said how to answer them (one rcode, one AA bit), and no
/// client sends them, so refusing them is clearer than answering the first and ignoring the rest.
public struct MeshDNSResponder: Sendable {
    /// The zone answered from.
    public let zone: MeshDNSZone
    /// The UDP payload size the server advertises and never exceeds.
    public let maxUDPPayloadSize: UInt16
    /// Whether out-of-zone queries are forwarded (this also sets RA in replies).
    public let forwardsOutsideZone: Bool
    /// Which names a client may see; nil: every name.
    public let visibility: MeshDNSVisibility?

    /// The classic UDP limit for clients without EDNS0 (RFC 1035 §4.2.1).
    public static let classicUDPSize = 512

    /// Creates a responder for `zone`.
    public init(zone: MeshDNSZone, maxUDPPayloadSize: UInt16 = 1232, forwardsOutsideZone: Bool = false,
                visibility: MeshDNSVisibility? = nil) {
        self.zone = zone
        self.maxUDPPayloadSize = max(maxUDPPayloadSize, UInt16(Self.classicUDPSize))
        self.forwardsOutsideZone = forwardsOutsideZone
        self.visibility = visibility
    }

    /// Decides the reply to the message in `bytes` from `client` (nil when unknown: with a
    /// visibility filter, such a client sees no name).
    public func respond(to bytes: UnsafeRawBufferPointer, transport: MeshDNSTransport, client: IPAddress? = nil) -> MeshDNSOutcome {
        guard let queryHeader = DNSMessage.parseHeader(bytes), !queryHeader.isResponse else { return .drop }
        var reply = DNSMessage(header: DNSHeader(
            id: queryHeader.id, isResponse: true, opcode: queryHeader.opcode,
            recursionDesired: queryHeader.recursionDesired, recursionAvailable: forwardsOutsideZone,
            checkingDisabled: queryHeader.checkingDisabled))
        let classicLimit = transport == .udp ? Self.classicUDPSize : DNSMessage.maxSize

        let query: DNSMessage
        do {
            query = try DNSMessage(parsing: bytes)
        } catch {
            // The header is readable, so the client can match a FORMERR (or NOTIMP) to its query.
            reply.responseCode = queryHeader.opcode == .query ? .formatError : .notImplemented
            return .reply(reply, maxSize: classicLimit)
        }
        reply.questions = query.questions
        var limit = classicLimit
        if let edns = query.edns {
            // Reply with our own payload size; a DO bit is echoed as RFC 3225 §3 asks.
            reply.edns = DNSEDNS(udpPayloadSize: maxUDPPayloadSize, dnssecOK: edns.dnssecOK)
            if transport == .udp {
                limit = max(Self.classicUDPSize, Int(min(edns.udpPayloadSize, maxUDPPayloadSize)))
            }
            if edns.version > 0 {
                reply.responseCode = .badVersion
                return .reply(reply, maxSize: limit)
            }
        }
        guard query.header.opcode == .query else {
            reply.responseCode = .notImplemented
            return .reply(reply, maxSize: limit)
        }
        guard query.questions.count == 1 else {
            reply.responseCode = .formatError
            return .reply(reply, maxSize: limit)
        }
        let question = query.questions[0]
        let snapshot = zone.snapshot()
        guard question.name.isSubdomain(of: snapshot.origin) else {
            if forwardsOutsideZone { return .forward }
            reply.responseCode = .refused
            return .reply(reply, maxSize: limit)
        }
        guard question.recordClass == .in || question.recordClass == .any else {
            reply.responseCode = .refused
            return .reply(reply, maxSize: limit)
        }
        if let visibility {
            snapshot.answer(question, into: &reply) { name in client.map { visibility($0, name) } ?? false }
        } else {
            snapshot.answer(question, into: &reply)
        }
        return .reply(reply, maxSize: limit)
    }

    /// Decides the reply to the message in `bytes`.
    public func respond(to bytes: [UInt8], transport: MeshDNSTransport, client: IPAddress? = nil) -> MeshDNSOutcome {
        bytes.withUnsafeBytes { respond(to: $0, transport: transport, client: client) }
    }
}

extension MeshDNSZoneSnapshot {
    /// Fills in the answer for an in-zone question: records, authority SOA, AA and the response code.
    func answer(_ question: DNSQuestion, into reply: inout DNSMessage, visible: (DNSName) -> Bool = { _ in true }) {
        let config = configuration
        let name = question.name
        if question.type == .axfr || question.type == .ixfr {
            // Peers have the data already; zone transfers would only expose the whole mesh to one query.
            reply.responseCode = .refused
            return
        }
        reply.header.isAuthoritative = true
        let wantsAny = question.type == .any
        if name == origin {
            if question.type == .soa || wantsAny {
                reply.answers.append(DNSResourceRecord(name: name, ttl: config.recordTTL, data: .soa(soa)))
            }
            if question.type == .ns || wantsAny {
                reply.answers.append(DNSResourceRecord(name: name, ttl: config.recordTTL,
                                                       data: .ns(config.nameServer)))
                if let glue = entries[config.nameServer] {
                    appendAddresses(glue, owner: config.nameServer, v4: true, v6: true, to: &reply.additionals)
                }
            }
        }
        if let entry = entries[name], name == config.nameServer || visible(name) {
            let v4 = question.type == .a || wantsAny
            let v6 = question.type == .aaaa || wantsAny
            appendAddresses(entry, owner: name, v4: v4, v6: v6, to: &reply.answers)
        } else if name != origin && (descendants[name] == nil || !visible(name)) {
            reply.responseCode = .nameError
        }
        if reply.answers.isEmpty {
            // NXDOMAIN or NODATA: the SOA lets resolvers cache the negative answer (RFC 2308 §3).
            reply.authorities.append(DNSResourceRecord(name: origin, ttl: config.negativeTTL, data: .soa(soa)))
        }
    }

    private func appendAddresses(_ entry: MeshDNSEntry, owner: DNSName, v4: Bool, v6: Bool,
                                 to records: inout [DNSResourceRecord]) {
        let ttl = configuration.recordTTL
        if v4 {
            for address in entry.ipv4 { records.append(DNSResourceRecord(name: owner, ttl: ttl, data: .a(address))) }
        }
        if v6 {
            for address in entry.ipv6 {
                records.append(DNSResourceRecord(name: owner, ttl: ttl, data: .aaaa(address)))
            }
        }
    }
}
