import Foundation
import SwiftProtobuf

/// Walks a swift-protobuf message and every message nested in it, and records for each message
/// instance which fields hold a non-default value, and where unknown fields were kept.
///
/// Generated `traverse` visits exactly the fields that differ from their default, so the recorded
/// numbers are "the fields that are set". Unknown fields reach `visitUnknown`, at whatever depth.
struct FieldCollector: SwiftProtobuf.Visitor {
    /// One message in the tree.
    struct Instance {
        /// Where it sits, e.g. `mesh.v1.PeersUpdated.3[1]` (field numbers, element indexes).
        var path: String
        /// Its protobuf full name.
        var typeName: String
        /// Numbers of its fields that are set.
        var setFields: Set<Int> = []
    }

    private(set) var instances: [Instance] = []
    /// Paths of messages that kept unknown fields, with the number of unknown bytes.
    private(set) var unknownFields: [String: Int] = [:]
    private var current = 0

    /// Collects every message instance of `message`'s tree, the top one first.
    static func collect<M: SwiftProtobuf.Message>(_ message: M) throws -> FieldCollector {
        var collector = FieldCollector()
        try collector.descend(into: message, at: M.protoMessageName)
        return collector
    }

    private mutating func descend<M: SwiftProtobuf.Message>(into message: M, at path: String) throws {
        let parent = current
        instances.append(Instance(path: path, typeName: M.protoMessageName))
        current = instances.count - 1
        try message.traverse(visitor: &self)
        current = parent
    }

    private mutating func record(_ fieldNumber: Int) { instances[current].setFields.insert(fieldNumber) }

    mutating func visitUnknown(bytes: Data) throws {
        unknownFields[instances[current].path, default: 0] += bytes.count
    }

    // Every other scalar visit (singular or repeated, element by element) has a default that
    // forwards to one of these.
    mutating func visitSingularDoubleField(value: Double, fieldNumber: Int) throws { record(fieldNumber) }
    mutating func visitSingularInt64Field(value: Int64, fieldNumber: Int) throws { record(fieldNumber) }
    mutating func visitSingularUInt64Field(value: UInt64, fieldNumber: Int) throws { record(fieldNumber) }
    mutating func visitSingularBoolField(value: Bool, fieldNumber: Int) throws { record(fieldNumber) }
    mutating func visitSingularStringField(value: String, fieldNumber: Int) throws { record(fieldNumber) }
    mutating func visitSingularBytesField(value: Data, fieldNumber: Int) throws { record(fieldNumber) }
    mutating func visitSingularEnumField<E: SwiftProtobuf.Enum>(value: E, fieldNumber: Int) throws {
        record(fieldNumber)
    }

    mutating func visitSingularMessageField<M: SwiftProtobuf.Message>(value: M, fieldNumber: Int) throws {
        record(fieldNumber)
        try descend(into: value, at: "\(instances[current].path).\(fieldNumber)")
    }

    mutating func visitRepeatedMessageField<M: SwiftProtobuf.Message>(value: [M], fieldNumber: Int) throws {
        record(fieldNumber)
        let path = instances[current].path
        for (index, element) in value.enumerated() {
            try descend(into: element, at: "\(path).\(fieldNumber)[\(index)]")
        }
    }

    mutating func visitMapField<KeyType, ValueType: MapValueType>(
        fieldType: _ProtobufMap<KeyType, ValueType>.Type,
        value: _ProtobufMap<KeyType, ValueType>.BaseType,
        fieldNumber: Int
    ) throws { record(fieldNumber) }

    mutating func visitMapField<KeyType, ValueType>(
        fieldType: _ProtobufEnumMap<KeyType, ValueType>.Type,
        value: _ProtobufEnumMap<KeyType, ValueType>.BaseType,
        fieldNumber: Int
    ) throws where ValueType.RawValue == Int { record(fieldNumber) }

    mutating func visitMapField<KeyType, ValueType>(
        fieldType: _ProtobufMessageMap<KeyType, ValueType>.Type,
        value: _ProtobufMessageMap<KeyType, ValueType>.BaseType,
        fieldNumber: Int
    ) throws { record(fieldNumber) }
}
