import NIOCore

/// A DNS message (RFC 1035 §4.1): header, the four sections, and the EDNS0 OPT record held apart.
public struct DNSMessage: Hashable, Sendable {
    /// Identifier and flags. The section counts are not stored: they follow from the arrays.
    public var header: DNSHeader
    /// The question section.
    public var questions: [DNSQuestion]
    /// The answer section.
    public var answers: [DNSResourceRecord]
    /// The authority section.
    public var authorities: [DNSResourceRecord]
    /// The additional section, without the OPT record.
    public var additionals: [DNSResourceRecord]
    /// The OPT pseudo-record, when the message has one; it is always written last in the additional section.
    public var edns: DNSEDNS?

    /// Creates a message.
    public init(header: DNSHeader, questions: [DNSQuestion] = [], answers: [DNSResourceRecord] = [],
                authorities: [DNSResourceRecord] = [], additionals: [DNSResourceRecord] = [], edns: DNSEDNS? = nil) {
        self.header = header
        self.questions = questions
        self.answers = answers
        self.authorities = authorities
        self.additionals = additionals
        self.edns = edns
    }

    /// The full response code: the header's four bits, extended by the OPT record's eight (RFC 6891 §6.1.3).
    ///
    /// Setting a code above 15 on a message without EDNS keeps only the low bits, as nothing else can carry them.
    public var responseCode: DNSResponseCode {
        get { DNSResponseCode(rawValue: UInt16(edns?.extendedRCode ?? 0) << 4 | UInt16(header.rcodeLow)) }
        set {
            header.rcodeLow = UInt8(newValue.rawValue & 0x0f)
            edns?.extendedRCode = UInt8(newValue.rawValue >> 4)
        }
    }
}

/// Why a message could not be decoded.
public enum DNSParseError: Error, Sendable, Equatable {
    /// The message ended inside a field; the payload is the offset that was being read.
    case truncated(offset: Int)
    /// A label length byte with the reserved `01` or `10` high bits, i.e. a label longer than 63 bytes.
    case badLabelType(offset: Int)
    /// A name longer than 255 bytes once decompressed.
    case nameTooLong(offset: Int)
    /// A compression pointer that does not point strictly before the name being read: a forward pointer,
    /// a pointer to itself or a loop.
    case badPointer(offset: Int)
    /// Record data whose length or content does not fit its type.
    case badRecordData(offset: Int)
    /// More than one OPT record, an OPT record outside the additional section, or one not owned by the root.
    case badOPT(offset: Int)
    /// Bytes left over after the last section.
    case trailingBytes(offset: Int)
}

// MARK: - Decoding

extension DNSMessage {
    /// The smallest possible message: the header alone.
    public static let headerSize = 12

    /// Decodes the header only, or returns nil when fewer than 12 bytes are given.
    ///
    /// The server uses this to tell garbage (no reply) from a malformed query (FORMERR with the query's id).
    public static func parseHeader(_ bytes: UnsafeRawBufferPointer) -> DNSHeader? {
        guard bytes.count >= headerSize else { return nil }
        let id = UInt16(bytes[0]) << 8 | UInt16(bytes[1])
        let flags = UInt16(bytes[2]) << 8 | UInt16(bytes[3])
        return DNSHeader(id: id, flags: flags)
    }

    /// Decodes a whole message, checking every length, pointer and record against RFC 1035 and RFC 6891.
    public init(parsing bytes: UnsafeRawBufferPointer) throws(DNSParseError) {
        var reader = DNSWireReader(bytes: bytes)
        guard let header = Self.parseHeader(bytes) else { throw .truncated(offset: 0) }
        reader.offset = 4
        let qdCount = Int(try reader.readUInt16())
        let anCount = Int(try reader.readUInt16())
        let nsCount = Int(try reader.readUInt16())
        let arCount = Int(try reader.readUInt16())

        // Each question takes at least 5 bytes and each record at least 11, so counts beyond what the
        // message could hold are rejected before anything is reserved for them.
        guard qdCount * 5 + (anCount + nsCount + arCount) * 11 <= bytes.count - Self.headerSize else {
            throw .truncated(offset: Self.headerSize)
        }

        var questions: [DNSQuestion] = []
        questions.reserveCapacity(qdCount)
        for _ in 0..<qdCount {
            let name = try reader.readName()
            let type = DNSRecordType(rawValue: try reader.readUInt16())
            let recordClass = DNSClass(rawValue: try reader.readUInt16())
            questions.append(DNSQuestion(name: name, type: type, recordClass: recordClass))
        }
        var edns: DNSEDNS?
        func readSection(_ count: Int, allowOPT: Bool) throws(DNSParseError) -> [DNSResourceRecord] {
            var records: [DNSResourceRecord] = []
            records.reserveCapacity(count)
            for _ in 0..<count {
                let start = reader.offset
                switch try reader.readRecord() {
                case .record(let record):
                    records.append(record)
                case .opt(let opt):
                    guard allowOPT, edns == nil else { throw .badOPT(offset: start) }
                    edns = opt
                }
            }
            return records
        }
        let answers = try readSection(anCount, allowOPT: false)
        let authorities = try readSection(nsCount, allowOPT: false)
        let additionals = try readSection(arCount, allowOPT: true)
        guard reader.offset == bytes.count else { throw .trailingBytes(offset: reader.offset) }
        self.init(header: header, questions: questions, answers: answers, authorities: authorities,
                  additionals: additionals, edns: edns)
    }

    /// Decodes a whole message from an array.
    public init(parsing bytes: [UInt8]) throws(DNSParseError) {
        let result: Result<DNSMessage, DNSParseError> = bytes.withUnsafeBytes { raw in
            Result { () throws(DNSParseError) -> DNSMessage in try DNSMessage(parsing: raw) }
        }
        self = try result.get()
    }

    /// Decodes a whole message from a buffer's readable bytes, without moving its reader index.
    public init(parsing buffer: ByteBuffer) throws(DNSParseError) {
        let result: Result<DNSMessage, DNSParseError> = buffer.withUnsafeReadableBytes { raw in
            Result { () throws(DNSParseError) -> DNSMessage in try DNSMessage(parsing: raw) }
        }
        self = try result.get()
    }
}

/// A bounds-checked cursor over a message; every read either succeeds within the buffer or throws.
struct DNSWireReader {
    let bytes: UnsafeRawBufferPointer
    var offset = 0

    /// What one record in a section turned out to be.
    enum Entry {
        case record(DNSResourceRecord)
        case opt(DNSEDNS)
    }

    /// The most compression pointers one name may follow. The strictly-backward rule already rules out
    /// loops; this only bounds the work a hostile message can cause.
    static let maxPointerHops = 126

    mutating func readUInt8() throws(DNSParseError) -> UInt8 {
        guard offset < bytes.count else { throw .truncated(offset: offset) }
        defer { offset += 1 }
        return bytes[offset]
    }

    mutating func readUInt16() throws(DNSParseError) -> UInt16 {
        guard offset + 2 <= bytes.count else { throw .truncated(offset: offset) }
        defer { offset += 2 }
        return UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
    }

    mutating func readUInt32() throws(DNSParseError) -> UInt32 {
        guard offset + 4 <= bytes.count else { throw .truncated(offset: offset) }
        defer { offset += 4 }
        return UInt32(bytes[offset]) << 24 | UInt32(bytes[offset + 1]) << 16 | UInt32(bytes[offset + 2]) << 8
            | UInt32(bytes[offset + 3])
    }

    /// Reads a possibly compressed name, leaving `offset` just past its in-place bytes.
    ///
    /// A pointer must point strictly before the lowest offset this name has read so far, so every jump
    /// goes backwards and no sequence of pointers can revisit a byte: loops, self-pointers and forward
    /// pointers are all rejected by the same check.
    mutating func readName() throws(DNSParseError) -> DNSName {
        var out: [UInt8] = []
        out.reserveCapacity(32)
        var position = offset
        var lowest = offset
        var jumped = false
        var hops = 0
        while true {
            guard position < bytes.count else { throw .truncated(offset: position) }
            let length = bytes[position]
            switch length & 0xc0 {
            case 0x00:
                if length == 0 {
                    out.append(0)
                    if !jumped { offset = position + 1 }
                    return DNSName(validatedWire: out)
                }
                let end = position + 1 + Int(length)
                guard end <= bytes.count else { throw .truncated(offset: position) }
                // +1 for the root label that must still follow.
                guard out.count + 1 + Int(length) + 1 <= DNSName.maxWireLength else {
                    throw .nameTooLong(offset: position)
                }
                out.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[position..<end]))
                position = end
            case 0xc0:
                guard position + 2 <= bytes.count else { throw .truncated(offset: position) }
                let target = Int(length & 0x3f) << 8 | Int(bytes[position + 1])
                hops += 1
                guard target < lowest, hops <= Self.maxPointerHops else { throw .badPointer(offset: position) }
                if !jumped {
                    offset = position + 2
                    jumped = true
                }
                lowest = target
                position = target
            default:
                throw .badLabelType(offset: position)
            }
        }
    }

    /// Reads one resource record, interpreting the data of the types this codec knows.
    mutating func readRecord() throws(DNSParseError) -> Entry {
        let start = offset
        let name = try readName()
        let type = DNSRecordType(rawValue: try readUInt16())
        let classField = try readUInt16()
        let ttl = try readUInt32()
        let length = Int(try readUInt16())
        let dataStart = offset
        let dataEnd = dataStart + length
        guard dataEnd <= bytes.count else { throw .truncated(offset: dataStart) }

        if type == .opt {
            guard name.isRoot else { throw .badOPT(offset: start) }
            var options: [DNSEDNSOption] = []
            while offset < dataEnd {
                let code = try readUInt16()
                let optionLength = Int(try readUInt16())
                guard offset + optionLength <= dataEnd else { throw .badRecordData(offset: offset) }
                options.append(DNSEDNSOption(code: code, data: Array(bytes[offset..<(offset + optionLength)])))
                offset += optionLength
            }
            return .opt(DNSEDNS(udpPayloadSize: classField, extendedRCode: UInt8(ttl >> 24),
                                version: UInt8(ttl >> 16 & 0xff), dnssecOK: ttl & 0x8000 != 0, options: options))
        }

        let data: DNSRecordData
        switch type {
        case .a:
            guard length == 4 else { throw .badRecordData(offset: dataStart) }
            data = .a(.init(try readUInt32()))
        case .aaaa:
            guard length == 16 else { throw .badRecordData(offset: dataStart) }
            let high = UInt64(try readUInt32()) << 32 | UInt64(try readUInt32())
            let low = UInt64(try readUInt32()) << 32 | UInt64(try readUInt32())
            data = .aaaa(.init(high: high, low: low))
        case .ns, .cname, .ptr:
            let target = try readName()
            guard offset == dataEnd else { throw .badRecordData(offset: dataStart) }
            data = type == .ns ? .ns(target) : type == .cname ? .cname(target) : .ptr(target)
        case .soa:
            let mname = try readName()
            let rname = try readName()
            guard offset + 20 == dataEnd else { throw .badRecordData(offset: dataStart) }
            data = .soa(DNSSOA(mname: mname, rname: rname, serial: try readUInt32(), refresh: try readUInt32(),
                               retry: try readUInt32(), expire: try readUInt32(), minimum: try readUInt32()))
        default:
            data = .raw(Array(bytes[dataStart..<dataEnd]))
            offset = dataEnd
        }
        return .record(DNSResourceRecord(name: name, type: type, recordClass: DNSClass(rawValue: classField),
                                         ttl: ttl, data: data))
    }
}

// MARK: - Encoding

extension DNSMessage {
    /// The largest message either transport can carry (TCP's two-byte length prefix).
    public static let maxSize = 65535

    /// Appends the message to `buffer`, compressing names, and cuts it to `maxSize` bytes if needed.
    ///
    /// When the answer or authority section does not fit, every record of those sections and of the
    /// additional section is dropped and TC is set, so a client never caches a partial RRset (RFC 2181 §9)
    /// and retries over TCP. When only the additional section does not fit it is dropped without TC, as its
    /// records are optional. The OPT record is always kept: space for it is reserved up front.
    ///
    /// - Returns: true when the message was truncated.
    @discardableResult
    public func write(to buffer: inout ByteBuffer, maxSize: Int = DNSMessage.maxSize) -> Bool {
        var writer = DNSWireWriter(buffer: buffer)
        let truncated = writer.writeMessage(self, maxSize: min(maxSize, Self.maxSize))
        buffer = writer.buffer
        return truncated
    }

    /// The message's wire form, cut to `maxSize` bytes as ``write(to:maxSize:)`` describes.
    public func serialized(maxSize: Int = DNSMessage.maxSize) -> [UInt8] {
        var buffer = ByteBufferAllocator().buffer(capacity: 512)
        write(to: &buffer, maxSize: maxSize)
        return Array(buffer.readableBytesView)
    }
}

/// Writes a message into a ByteBuffer with name compression (RFC 1035 §4.1.4).
struct DNSWireWriter {
    var buffer: ByteBuffer
    /// Where the message starts in `buffer`; compression offsets are relative to it.
    let base: Int
    /// Message offsets of every label written in full, each the start of a name suffix a later name may reuse.
    var suffixOffsets: [UInt16] = []

    init(buffer: ByteBuffer) {
        self.buffer = buffer
        base = buffer.writerIndex
        suffixOffsets.reserveCapacity(16)
    }

    var size: Int { buffer.writerIndex - base }

    mutating func writeMessage(_ message: DNSMessage, maxSize: Int) -> Bool {
        var header = message.header
        buffer.writeInteger(header.id)
        buffer.writeInteger(header.flags)
        buffer.writeInteger(UInt16(0))
        buffer.writeInteger(UInt16(0))
        buffer.writeInteger(UInt16(0))
        buffer.writeInteger(UInt16(0))

        let reserved = message.edns?.wireSize ?? 0
        let limit = maxSize - reserved
        var qdCount = 0, anCount = 0, nsCount = 0, arCount = 0
        var truncated = false

        for question in message.questions {
            writeName(question.name)
            buffer.writeInteger(question.type.rawValue)
            buffer.writeInteger(question.recordClass.rawValue)
            qdCount += 1
        }
        if size > limit {
            // Only a pathologically small limit gets here; the header alone is still a valid reply.
            rollBack(to: (base + DNSMessage.headerSize, 0))
            qdCount = 0
            truncated = true
        }

        let afterQuestions = mark
        if !truncated,
           !writeSection(message.answers, count: &anCount, limit: limit)
            || !writeSection(message.authorities, count: &nsCount, limit: limit) {
            rollBack(to: afterQuestions)
            anCount = 0
            nsCount = 0
            truncated = true
        }
        if !truncated {
            let beforeAdditional = mark
            if !writeSection(message.additionals, count: &arCount, limit: limit) {
                rollBack(to: beforeAdditional)
                arCount = 0
            }
        }
        if let edns = message.edns {
            writeOPT(edns)
            arCount += 1
        }
        if truncated {
            header.isTruncated = true
            buffer.setInteger(header.flags, at: base + 2)
        }
        buffer.setInteger(UInt16(qdCount), at: base + 4)
        buffer.setInteger(UInt16(anCount), at: base + 6)
        buffer.setInteger(UInt16(nsCount), at: base + 8)
        buffer.setInteger(UInt16(arCount), at: base + 10)
        return truncated
    }

    /// Writes records until one crosses `limit`; returns false then, leaving the caller to roll back.
    private mutating func writeSection(_ records: [DNSResourceRecord], count: inout Int, limit: Int) -> Bool {
        for record in records {
            writeRecord(record)
            if size > limit { return false }
            count += 1
        }
        return true
    }

    /// A position to roll back to: the writer index and how many compression entries existed then.
    var mark: (Int, Int) { (buffer.writerIndex, suffixOffsets.count) }

    mutating func rollBack(to mark: (Int, Int)) {
        buffer.moveWriterIndex(to: mark.0)
        suffixOffsets.removeLast(suffixOffsets.count - mark.1)
    }

    mutating func writeRecord(_ record: DNSResourceRecord) {
        writeName(record.name)
        buffer.writeInteger(record.type.rawValue)
        buffer.writeInteger(record.recordClass.rawValue)
        buffer.writeInteger(record.ttl)
        let lengthAt = buffer.writerIndex
        buffer.writeInteger(UInt16(0))
        switch record.data {
        case .a(let address):
            buffer.writeInteger(address.value)
        case .aaaa(let address):
            buffer.writeInteger(address.high)
            buffer.writeInteger(address.low)
        case .ns(let name), .cname(let name), .ptr(let name):
            writeName(name)
        case .soa(let soa):
            writeName(soa.mname)
            writeName(soa.rname)
            buffer.writeInteger(soa.serial)
            buffer.writeInteger(soa.refresh)
            buffer.writeInteger(soa.retry)
            buffer.writeInteger(soa.expire)
            buffer.writeInteger(soa.minimum)
        case .raw(let bytes):
            buffer.writeBytes(bytes)
        }
        buffer.setInteger(UInt16(truncatingIfNeeded: buffer.writerIndex - lengthAt - 2), at: lengthAt)
    }

    mutating func writeOPT(_ edns: DNSEDNS) {
        buffer.writeInteger(UInt8(0))
        buffer.writeInteger(DNSRecordType.opt.rawValue)
        buffer.writeInteger(edns.udpPayloadSize)
        let ttl = UInt32(edns.extendedRCode) << 24 | UInt32(edns.version) << 16 | (edns.dnssecOK ? 0x8000 : 0)
        buffer.writeInteger(ttl)
        buffer.writeInteger(UInt16(truncatingIfNeeded: edns.options.reduce(0) { $0 + 4 + $1.data.count }))
        for option in edns.options {
            buffer.writeInteger(option.code)
            buffer.writeInteger(UInt16(truncatingIfNeeded: option.data.count))
            buffer.writeBytes(option.data)
        }
    }

    /// Writes `name`, replacing its longest suffix already in the message by a pointer.
    mutating func writeName(_ name: DNSName) {
        let wire = name.wire
        var labelStart = 0
        while wire[labelStart] != 0 {
            if let target = findSuffix(wire, from: labelStart) {
                writeLabels(wire, upTo: labelStart)
                buffer.writeInteger(0xc000 | target)
                return
            }
            labelStart += 1 + Int(wire[labelStart])
        }
        writeLabels(wire, upTo: wire.count - 1)
        buffer.writeInteger(UInt8(0))
    }

    /// Writes the labels of `wire` before `end`, remembering where each starts for later names.
    private mutating func writeLabels(_ wire: [UInt8], upTo end: Int) {
        var i = 0
        while i < end {
            let offset = size
            // Pointers have 14 bits; a suffix further into the message can be written but not pointed to.
            if offset < 0x4000 { suffixOffsets.append(UInt16(offset)) }
            let length = Int(wire[i])
            buffer.writeBytes(wire[i..<(i + 1 + length)])
            i += 1 + length
        }
    }

    /// The message offset of a name equal (ignoring case) to `wire[from...]`, if one was written.
    private func findSuffix(_ wire: [UInt8], from start: Int) -> UInt16? {
        candidates: for candidate in suffixOffsets {
            var position = base + Int(candidate)
            var i = start
            var hops = 0
            while true {
                guard var length = buffer.getInteger(at: position, as: UInt8.self) else { continue candidates }
                while length & 0xc0 == 0xc0 {
                    // Everything in the message was written by this writer, so pointers are sound; the hop
                    // bound is only a guard against a bug turning into a hang.
                    guard let low = buffer.getInteger(at: position + 1, as: UInt8.self), hops < 128 else {
                        continue candidates
                    }
                    hops += 1
                    position = base + (Int(length & 0x3f) << 8 | Int(low))
                    guard let next = buffer.getInteger(at: position, as: UInt8.self) else { continue candidates }
                    length = next
                }
                guard length == wire[i] else { continue candidates }
                if length == 0 { return candidate }
                for k in 1...Int(length) {
                    guard let b = buffer.getInteger(at: position + k, as: UInt8.self),
                          DNSName.fold(b) == DNSName.fold(wire[i + k]) else { continue candidates }
                }
                position += 1 + Int(length)
                i += 1 + Int(length)
            }
        }
        return nil
    }
}
