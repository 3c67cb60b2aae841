import Foundation
import SwiftProtobuf

/// Fills any swift-protobuf message with random non-default values, using only Swift's generated code.
///
/// swift-protobuf has no reflection API for setting fields, but every generated message decodes
/// itself by asking a `SwiftProtobuf.Decoder` for field numbers and then calling the typed
/// `decodeSingular…Field(value: &field)` for each. This decoder answers "next field" with every
/// number from 1 to `maxFieldNumber` and writes a random non-default value into whatever field the
/// generated code hands it; numbers the message does not have fall into its `default: break`.
/// The result is a message Swift built entirely by itself, with every field set (for a oneof, the
/// member with the highest number, as the last assignment wins).
///
/// Field numbers above `maxFieldNumber` (2047: every field whose tag fits in two bytes) are not
/// filled; mesh.v1 uses 1...16, and the C → Swift direction covers any number.
public struct RandomMessageBuilder: SwiftProtobuf.Decoder {
    /// The highest field number tried.
    public static let maxFieldNumber = 2047
    /// Nesting deeper than this leaves message fields unset, which only matters for recursive types.
    public static let maxDepth = 8

    private var generator: SeededRandom
    private let depth: Int
    private var nextNumber = 1

    /// Builds a random `M` from `seed`; the same seed always gives the same message.
    public static func build<M: SwiftProtobuf.Message>(_ type: M.Type, seed: UInt64) throws -> M {
        var builder = RandomMessageBuilder(generator: SeededRandom(seed: seed), depth: 0)
        var message = M()
        try message.decodeMessage(decoder: &builder)
        return message
    }

    /// Builds a random message of a type known only at run time.
    public static func build(any type: any SwiftProtobuf.Message.Type, seed: UInt64) throws -> any SwiftProtobuf.Message {
        try build(type, seed: seed)
    }

    private init(generator: SeededRandom, depth: Int) {
        self.generator = generator
        self.depth = depth
    }

    // MARK: Random values

    private mutating func nonZero<T: FixedWidthInteger>(_: T.Type) -> T {
        while true {
            let value = T.random(in: T.min...T.max, using: &generator)
            if value != 0 { return value }
        }
    }

    /// Finite, non-zero, of any magnitude (so JSON printing of exponents is exercised too).
    private mutating func nonZeroDouble() -> Double {
        while true {
            let value = Double(bitPattern: generator.next())
            if value.isFinite && value != 0 { return value }
        }
    }

    private mutating func nonZeroFloat() -> Float {
        while true {
            let value = Float(bitPattern: UInt32(truncatingIfNeeded: generator.next()))
            if value.isFinite && value != 0 { return value }
        }
    }

    /// Characters that stress JSON escaping and UTF-8 handling on both sides (1- to 4-byte UTF-8,
    /// quotes, backslashes, control characters).
    ///
    /// Two are left out on purpose. U+0000: protobuf-c keeps strings NUL-terminated, so a NUL cuts the
    /// string short on the C side (a real limit, see docs/interop.md). U+FEFF: Foundation's
    /// JSONSerialization on Linux drops it when it directly follows an escape sequence, and the two
    /// sides escape different characters, so the comparison would fail on the parser, not the wire.
    private static let alphabet: [Character] = Array(
        "abcXYZ019 -_./:@\"\\\t\n\r\u{01}\u{1F}\u{7F}é߷✓€\u{2028}🦊𝄞"
    )

    private mutating func randomString() -> String {
        let count = Int.random(in: 1...24, using: &generator)
        return String((0..<count).map { _ in Self.alphabet.randomElement(using: &generator)! })
    }

    private mutating func randomBytes() -> Data {
        let count = Int.random(in: 1...20, using: &generator)
        return Data((0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) })
    }

    private mutating func elementCount() -> Int { Int.random(in: 1...3, using: &generator) }

    private mutating func repeated<T>(_ make: (inout Self) -> T) -> [T] {
        (0..<elementCount()).map { _ in make(&self) }
    }

    private mutating func randomEnum<E: SwiftProtobuf.Enum>(_: E.Type) throws -> E where E.RawValue == Int {
        // Generated enums are CaseIterable; `.UNRECOGNIZED` is not among the cases, so every pick is valid.
        guard let iterable = E.self as? any CaseIterable.Type else {
            throw BuilderFailure(description: "\(E.self) is not CaseIterable")
        }
        let candidates = Self.cases(of: iterable).compactMap { $0 as? E }.filter { $0.rawValue != 0 }
        guard let pick = candidates.randomElement(using: &generator) else {
            throw BuilderFailure(description: "\(E.self) has no non-zero value")
        }
        return pick
    }

    private static func cases<C: CaseIterable>(of type: C.Type) -> [Any] { type.allCases.map { $0 } }

    private mutating func randomMessage<M: SwiftProtobuf.Message>(_: M.Type) throws -> M? {
        guard depth < Self.maxDepth else { return nil }
        var nested = RandomMessageBuilder(generator: SeededRandom(seed: generator.next()), depth: depth + 1)
        var message = M()
        try message.decodeMessage(decoder: &nested)
        return message
    }

    // MARK: SwiftProtobuf.Decoder

    public mutating func handleConflictingOneOf() throws {}

    public mutating func nextFieldNumber() throws -> Int? {
        guard nextNumber <= Self.maxFieldNumber else { return nil }
        defer { nextNumber += 1 }
        return nextNumber
    }

    public mutating func decodeSingularFloatField(value: inout Float) throws { value = nonZeroFloat() }
    public mutating func decodeSingularFloatField(value: inout Float?) throws { value = nonZeroFloat() }
    public mutating func decodeRepeatedFloatField(value: inout [Float]) throws { value = repeated { $0.nonZeroFloat() } }
    public mutating func decodeSingularDoubleField(value: inout Double) throws { value = nonZeroDouble() }
    public mutating func decodeSingularDoubleField(value: inout Double?) throws { value = nonZeroDouble() }
    public mutating func decodeRepeatedDoubleField(value: inout [Double]) throws { value = repeated { $0.nonZeroDouble() } }
    public mutating func decodeSingularInt32Field(value: inout Int32) throws { value = nonZero(Int32.self) }
    public mutating func decodeSingularInt32Field(value: inout Int32?) throws { value = nonZero(Int32.self) }
    public mutating func decodeRepeatedInt32Field(value: inout [Int32]) throws { value = repeated { $0.nonZero(Int32.self) } }
    public mutating func decodeSingularInt64Field(value: inout Int64) throws { value = nonZero(Int64.self) }
    public mutating func decodeSingularInt64Field(value: inout Int64?) throws { value = nonZero(Int64.self) }
    public mutating func decodeRepeatedInt64Field(value: inout [Int64]) throws { value = repeated { $0.nonZero(Int64.self) } }
    public mutating func decodeSingularUInt32Field(value: inout UInt32) throws { value = nonZero(UInt32.self) }
    public mutating func decodeSingularUInt32Field(value: inout UInt32?) throws { value = nonZero(UInt32.self) }
    public mutating func decodeRepeatedUInt32Field(value: inout [UInt32]) throws { value = repeated { $0.nonZero(UInt32.self) } }
    public mutating func decodeSingularUInt64Field(value: inout UInt64) throws { value = nonZero(UInt64.self) }
    public mutating func decodeSingularUInt64Field(value: inout UInt64?) throws { value = nonZero(UInt64.self) }
    public mutating func decodeRepeatedUInt64Field(value: inout [UInt64]) throws { value = repeated { $0.nonZero(UInt64.self) } }
    public mutating func decodeSingularSInt32Field(value: inout Int32) throws { value = nonZero(Int32.self) }
    public mutating func decodeSingularSInt32Field(value: inout Int32?) throws { value = nonZero(Int32.self) }
    public mutating func decodeRepeatedSInt32Field(value: inout [Int32]) throws { value = repeated { $0.nonZero(Int32.self) } }
    public mutating func decodeSingularSInt64Field(value: inout Int64) throws { value = nonZero(Int64.self) }
    public mutating func decodeSingularSInt64Field(value: inout Int64?) throws { value = nonZero(Int64.self) }
    public mutating func decodeRepeatedSInt64Field(value: inout [Int64]) throws { value = repeated { $0.nonZero(Int64.self) } }
    public mutating func decodeSingularFixed32Field(value: inout UInt32) throws { value = nonZero(UInt32.self) }
    public mutating func decodeSingularFixed32Field(value: inout UInt32?) throws { value = nonZero(UInt32.self) }
    public mutating func decodeRepeatedFixed32Field(value: inout [UInt32]) throws { value = repeated { $0.nonZero(UInt32.self) } }
    public mutating func decodeSingularFixed64Field(value: inout UInt64) throws { value = nonZero(UInt64.self) }
    public mutating func decodeSingularFixed64Field(value: inout UInt64?) throws { value = nonZero(UInt64.self) }
    public mutating func decodeRepeatedFixed64Field(value: inout [UInt64]) throws { value = repeated { $0.nonZero(UInt64.self) } }
    public mutating func decodeSingularSFixed32Field(value: inout Int32) throws { value = nonZero(Int32.self) }
    public mutating func decodeSingularSFixed32Field(value: inout Int32?) throws { value = nonZero(Int32.self) }
    public mutating func decodeRepeatedSFixed32Field(value: inout [Int32]) throws { value = repeated { $0.nonZero(Int32.self) } }
    public mutating func decodeSingularSFixed64Field(value: inout Int64) throws { value = nonZero(Int64.self) }
    public mutating func decodeSingularSFixed64Field(value: inout Int64?) throws { value = nonZero(Int64.self) }
    public mutating func decodeRepeatedSFixed64Field(value: inout [Int64]) throws { value = repeated { $0.nonZero(Int64.self) } }
    public mutating func decodeSingularBoolField(value: inout Bool) throws { value = true }
    public mutating func decodeSingularBoolField(value: inout Bool?) throws { value = true }
    public mutating func decodeRepeatedBoolField(value: inout [Bool]) throws {
        value = repeated { $0.generator.next() & 1 == 1 }
    }
    public mutating func decodeSingularStringField(value: inout String) throws { value = randomString() }
    public mutating func decodeSingularStringField(value: inout String?) throws { value = randomString() }
    public mutating func decodeRepeatedStringField(value: inout [String]) throws { value = repeated { $0.randomString() } }
    public mutating func decodeSingularBytesField(value: inout Data) throws { value = randomBytes() }
    public mutating func decodeSingularBytesField(value: inout Data?) throws { value = randomBytes() }
    public mutating func decodeRepeatedBytesField(value: inout [Data]) throws { value = repeated { $0.randomBytes() } }

    public mutating func decodeSingularEnumField<E: SwiftProtobuf.Enum>(value: inout E) throws where E.RawValue == Int {
        value = try randomEnum(E.self)
    }
    public mutating func decodeSingularEnumField<E: SwiftProtobuf.Enum>(value: inout E?) throws where E.RawValue == Int {
        value = try randomEnum(E.self)
    }
    public mutating func decodeRepeatedEnumField<E: SwiftProtobuf.Enum>(value: inout [E]) throws where E.RawValue == Int {
        value = try (0..<elementCount()).map { _ in try randomEnum(E.self) }
    }

    public mutating func decodeSingularMessageField<M: SwiftProtobuf.Message>(value: inout M?) throws {
        value = try randomMessage(M.self)
    }
    public mutating func decodeRepeatedMessageField<M: SwiftProtobuf.Message>(value: inout [M]) throws {
        value = try (0..<elementCount()).compactMap { _ in try randomMessage(M.self) }
    }

    // proto3 has no groups, and the C harness does not support maps yet: refuse loudly rather than
    // produce a message that silently skips a field.
    public mutating func decodeSingularGroupField<G: SwiftProtobuf.Message>(value: inout G?) throws {
        throw BuilderFailure(description: "group fields are not supported")
    }
    public mutating func decodeRepeatedGroupField<G: SwiftProtobuf.Message>(value: inout [G]) throws {
        throw BuilderFailure(description: "group fields are not supported")
    }
    public mutating func decodeMapField<KeyType, ValueType: MapValueType>(
        fieldType: _ProtobufMap<KeyType, ValueType>.Type,
        value: inout _ProtobufMap<KeyType, ValueType>.BaseType
    ) throws {
        throw BuilderFailure(description: "map fields are not supported")
    }
    public mutating func decodeMapField<KeyType, ValueType>(
        fieldType: _ProtobufEnumMap<KeyType, ValueType>.Type,
        value: inout _ProtobufEnumMap<KeyType, ValueType>.BaseType
    ) throws where ValueType.RawValue == Int {
        throw BuilderFailure(description: "map fields are not supported")
    }
    public mutating func decodeMapField<KeyType, ValueType>(
        fieldType: _ProtobufMessageMap<KeyType, ValueType>.Type,
        value: inout _ProtobufMessageMap<KeyType, ValueType>.BaseType
    ) throws {
        throw BuilderFailure(description: "map fields are not supported")
    }
    public mutating func decodeExtensionField(
        values: inout ExtensionFieldValueSet,
        messageType: any SwiftProtobuf.Message.Type,
        fieldNumber: Int
    ) throws {
        throw BuilderFailure(description: "extension fields are not supported")
    }
}

/// A message the builder cannot fill.
public struct BuilderFailure: Error, CustomStringConvertible {
    public var description: String
}
