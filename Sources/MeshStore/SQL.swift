/// SQL text assembled only from literals in the source code.
///
/// A string literal is SQL, and so is an interpolation of another `SQL` value, so a query can reuse
/// a shared column list (`"SELECT \(columns) FROM devices"`). Interpolating a `String` does not
/// compile: values always travel as parameters (`$1`, `$2`, …), never inside the text.
public struct SQL: Sendable, ExpressibleByStringInterpolation, CustomStringConvertible {
    public let text: String

    public init(stringLiteral value: StaticString) { text = value.description }

    public init(stringInterpolation: StringInterpolation) { text = stringInterpolation.text }

    public var description: String { text }

    /// Builds SQL from literal pieces and other `SQL` values only.
    public struct StringInterpolation: StringInterpolationProtocol {
        var text = ""

        public init(literalCapacity: Int, interpolationCount: Int) { text.reserveCapacity(literalCapacity) }

        public mutating func appendLiteral(_ literal: StaticString) { text += literal.description }

        public mutating func appendInterpolation(_ fragment: SQL) { text += fragment.text }
    }
}
