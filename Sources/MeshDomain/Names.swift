import Foundation

/// Labels and their DNS-safe slugs.
///
/// A label is what a person typed (at most 63 code points as sent, at least one after trimming;
/// any Unicode except control characters), shown as typed once trimmed. Its slug is a DNS label:
/// lowercase a–z, 0–9 and '-', at most 63 characters, no leading or trailing '-'. Non-ASCII letters
/// are transliterated to Latin and stripped of accents ("Zoë's iPhone" → "zoes-iphone", "Иван" →
/// "ivan", "東京" → "dong-jing");
/// whatever still is not [a-z0-9] becomes a separator. A label with nothing usable (emoji only)
/// gets the slug of its device type ("iphone", "device"). Uniqueness within a tenant (`-2`, `-3`, …)
/// is the caller's job, because it needs the tenant's other names.
public enum Slug {
    /// The maximum label length in Unicode code points, counted as sent (before trimming), as the
    /// API's schema (`maxLength`) counts it.
    public static let maxLabelLength = 63

    /// Trims and validates a label. Throws `invalidArgument` for an empty, over-long, or
    /// control-character label.
    public static func validateLabel(_ raw: String) throws(MeshError) -> String {
        let label = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !label.isEmpty else { throw .invalidArgument(field: "label", message: "label must not be empty") }
        guard raw.unicodeScalars.count <= maxLabelLength else {
            throw .invalidArgument(field: "label", message: "label must be at most \(maxLabelLength) characters")
        }
        for scalar in label.unicodeScalars {
            // Cc (controls, incl. NUL which C peers would truncate at), Cf format characters such as
            // bidi overrides, and line/paragraph separators have no business in a name.
            switch scalar.properties.generalCategory {
            case .control, .format, .lineSeparator, .paragraphSeparator, .surrogate, .unassigned:
                throw .invalidArgument(field: "label", message: "label must not contain control characters")
            default: break
            }
        }
        return label
    }

    /// The slug for a label (without uniqueness suffix). `fallback` is used when nothing remains.
    public static func make(_ label: String, fallback: String = "device") -> String {
        let latin = label.applyingTransform(.toLatin, reverse: false) ?? label
        let folded = latin.folding(options: [.diacriticInsensitive, .caseInsensitive, .widthInsensitive], locale: Locale(identifier: "en_US_POSIX"))
        var out = ""
        var lastDash = true
        for u in folded.lowercased().unicodeScalars {
            if (u >= "a" && u <= "z") || (u >= "0" && u <= "9") {
                out.unicodeScalars.append(u)
                lastDash = false
            } else if u == "'" || u == "’" {
                continue  // "zoe's" → "zoes", not "zoe-s"
            } else if !lastDash {
                out.append("-")
                lastDash = true
            }
        }
        while out.hasSuffix("-") { out.removeLast() }
        if out.count > 63 {
            out = String(out.prefix(63))
            while out.hasSuffix("-") { out.removeLast() }
        }
        return out.isEmpty ? fallback : out
    }

    /// `base` with a numeric suffix (`base-2`), keeping the result within 63 characters.
    public static func withSuffix(_ base: String, _ n: Int) -> String {
        if n <= 1 { return base }
        let suffix = "-\(n)"
        var trimmed = String(base.prefix(63 - suffix.count))
        while trimmed.hasSuffix("-") { trimmed.removeLast() }
        return trimmed + suffix
    }
}

/// Mesh DNS names: every device and node is `<slug>.<tenant domain>`. Built here and nowhere else.
public enum MeshName {
    /// The DNS name of a member.
    public static func dnsName(slug: String, domain: String) -> String { "\(slug).\(domain)" }

    /// Validates a tenant's mesh DNS zone: lowercase DNS labels of a–z, 0–9 and '-', joined by dots,
    /// at most 200 characters (room for a 63-character slug), at least two labels.
    public static func validateDomain(_ raw: String, field: String = "domain") throws(MeshError) -> String {
        let d = raw.trimmingCharacters(in: .whitespaces).lowercased()
        let labels = d.split(separator: ".", omittingEmptySubsequences: false)
        let valid = !d.isEmpty && d.utf8.count <= 200 && labels.count >= 2 && labels.allSatisfy { l in
            !l.isEmpty && l.utf8.count <= 63 && !l.hasPrefix("-") && !l.hasSuffix("-")
                && l.unicodeScalars.allSatisfy { ($0 >= "a" && $0 <= "z") || ($0 >= "0" && $0 <= "9") || $0 == "-" }
        }
        guard valid else {
            throw .invalidArgument(field: field, message: "\(field) must be a DNS name of at least two labels (a-z, 0-9, '-'), such as quazzar.mesh")
        }
        return d
    }
}

/// Display names of tenants, users and nodes.
public enum DisplayName {
    /// A display name: 1–100 characters after trimming, no control characters.
    public static func validate(_ raw: String, field: String) throws(MeshError) -> String {
        let s = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !s.isEmpty, s.count <= 100 else { throw .invalidArgument(field: field, message: "\(field) must be 1 to 100 characters") }
        guard !s.unicodeScalars.contains(where: { $0.properties.generalCategory == .control || $0.properties.generalCategory == .format }) else {
            throw .invalidArgument(field: field, message: "\(field) must not contain control characters")
        }
        return s
    }
}

extension Slug {
    /// The first of `base`, `base-2`, `base-3`, … that is not in `taken` (the tenant's device and node
    /// names).
    public static func firstFree(_ base: String, taken: Set<String>) -> String {
        var n = 1
        while taken.contains(withSuffix(base, n)) { n += 1 }
        return withSuffix(base, n)
    }

    /// The prefix of `base` that every name ``firstFree(_:taken:)`` could pick starts with (storage
    /// reads only the names that could collide).
    public static func collisionPrefix(_ base: String) -> String { String(base.prefix(40)) }

    /// The names that start with ``collisionPrefix(_:)``, as the half-open range `lower ..< upper`
    /// of strings compared byte by byte (PostgreSQL's `~>=~` and `~<~`, the operators of a
    /// `text_pattern_ops` index). Unlike `LIKE 'prefix%'`, a range keeps using the index in a
    /// prepared statement's generic plan, so reading the taken names costs the same at 10 names
    /// and at 50,000. `upper` is the prefix with its last byte raised by one; trailing bytes that
    /// cannot be raised within ASCII are dropped first (the range then holds more names than
    /// needed, which only adds names ``firstFree(_:taken:)`` skips over; with nothing left, the range
    /// ends at the highest character).
    public static func collisionRange(_ base: String) -> (lower: String, upper: String) {
        let lower = collisionPrefix(base)
        var bytes = Array(lower.utf8)
        while let last = bytes.last, last >= 0x7F { bytes.removeLast() }
        guard let last = bytes.popLast() else { return (lower, "\u{10FFFF}") }
        bytes.append(last + 1)
        return (lower, String(decoding: bytes, as: UTF8.self))
    }
}
