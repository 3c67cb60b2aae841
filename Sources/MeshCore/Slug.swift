import Foundation

/// Labels and their DNS-safe slugs.
///
/// A label is what a person typed (1–63 characters after trimming, any Unicode except control
/// characters), shown exactly as typed. Its slug is a DNS label: lowercase a–z, 0–9 and '-', at most
/// 63 characters, no leading or trailing '-'. Non-ASCII letters are transliterated to Latin and
/// stripped of accents ("Zoë's iPhone" → "zoes-iphone", "Иван" → "ivan", "東京" → "dong-jing");
/// whatever still is not [a-z0-9] becomes a separator. A label with nothing usable (emoji only)
/// gets the slug of its device type ("iphone", "device"). Uniqueness within a tenant (`-2`, `-3`, …)
/// is the caller's job, because it needs the tenant's other names.
public enum Slug {
    /// The maximum label length in characters, after trimming.
    public static let maxLabelLength = 63

    /// Trims and validates a label. Throws `invalidArgument` for an empty, over-long, or
    /// control-character label.
    public static func validateLabel(_ raw: String) throws(MeshError) -> String {
        let label = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !label.isEmpty else { throw .invalidArgument(field: "label", message: "label must not be empty") }
        guard label.count <= maxLabelLength else {
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
