import Foundation
import MeshProto
import ProtoInterop
import SwiftProtobuf

/// Every message type swift-protobuf generated into MeshProto, found without a hand-kept list.
///
/// swift-protobuf has no runtime registry of message types, so the catalog reads the generated
/// sources (each message gets exactly one `extension <Type>: SwiftProtobuf.Message, ...` line) and
/// resolves each type name through the runtime's type metadata (`_typeByName`). A message added to a .proto and
/// regenerated therefore shows up here with no test edits, and the test comparing this catalog with
/// protobuf-c's descriptor table fails if either side's generated code is stale.
enum MessageCatalog {
    /// One generated message type.
    struct Entry: Sendable {
        /// The Swift type name, e.g. `Mesh_V1_Lease`.
        var swiftName: String
        /// The message type itself.
        var type: any SwiftProtobuf.Message.Type
        /// The protobuf full name, e.g. `mesh.v1.Lease`, as the type reports it.
        var fullName: String { type.protoMessageName }
    }

    /// Why the catalog could not be built.
    struct Failure: Error, Sendable, CustomStringConvertible {
        var description: String
    }

    /// Where the generated Swift lives, relative to this file.
    static var generatedSourcesDirectory: URL {
        URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent()  // ProtoInteropTests
            .deletingLastPathComponent()  // Tests
            .deletingLastPathComponent()  // package root
            .appendingPathComponent("Sources/MeshProto")
    }

    /// All message types, keyed by protobuf full name.
    static func load() throws -> [String: Entry] {
        let directory = generatedSourcesDirectory
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path)
            .filter { $0.hasSuffix(".pb.swift") }
            .sorted()
        guard !files.isEmpty else { throw Failure(description: "no *.pb.swift under \(directory.path)") }

        // e.g. "nonisolated extension Mesh_V1_Lease: SwiftProtobuf.Message, SwiftProtobuf._MessageImplementationBase, ..."
        let declaration = /^(?:nonisolated )?extension ([A-Za-z_][A-Za-z0-9_.]*): SwiftProtobuf\.Message\b/
        var entries: [String: Entry] = [:]
        for file in files {
            let source = try String(contentsOf: directory.appendingPathComponent(file), encoding: .utf8)
            for line in source.split(separator: "\n") {
                guard let match = line.firstMatch(of: declaration) else { continue }
                let swiftName = String(match.1)
                guard let type = _typeByName(mangledStructName(swiftName)) as? any SwiftProtobuf.Message.Type else {
                    throw Failure(description: "\(file): \(swiftName) is declared but cannot be resolved at run time")
                }
                let entry = Entry(swiftName: swiftName, type: type)
                guard entries.updateValue(entry, forKey: entry.fullName) == nil else {
                    throw Failure(description: "\(entry.fullName) declared twice")
                }
            }
        }
        return entries
    }

    /// The runtime's mangled name of a MeshProto struct, e.g. `Mesh_V1_Lease` ->
    /// `9MeshProto13Mesh_V1_LeaseV` (a nested `A.B` -> `...1AV1BV`), which `_typeByName` resolves.
    /// Generated message names are ASCII identifiers, so no punycode is needed.
    static func mangledStructName(_ swiftName: String) -> String {
        let components = ["MeshProto"] + swiftName.split(separator: ".").map(String.init)
        return "\(components[0].utf8.count)\(components[0])"
            + components.dropFirst().map { "\($0.utf8.count)\($0)V" }.joined()
    }

    /// The catalog, loaded once for all tests; a load failure is reported by `catalogLoads`.
    static let shared: Result<[String: Entry], Failure> = {
        do {
            return .success(try load())
        } catch let failure as Failure {
            return .failure(failure)
        } catch {
            return .failure(Failure(description: "\(error)"))
        }
    }()

    /// Full names of all message types known to Swift or to protobuf-c, sorted: the arguments of the
    /// per-message tests. Taking both sides means a broken catalog still yields failing test cases
    /// instead of an empty, silently passing parameter list.
    static var fullNames: [String] {
        Set(((try? shared.get()) ?? [:]).keys).union(ProtoC.messageNames).sorted()
    }

    /// The Swift type for a full name.
    static func entry(_ fullName: String) throws -> Entry {
        guard let entry = try shared.get()[fullName] else {
            throw Failure(description: "no Swift message type \(fullName)")
        }
        return entry
    }
}
