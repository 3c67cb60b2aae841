/// QR codes of WireGuard device configs, rendered as SVG.
///
/// ```swift
/// let svg = try MeshQR.svg(for: config)   // M level, 6 px modules
/// ```
///
/// The default error-correction level is `.medium`. The code is shown on a screen and scanned by a
/// phone camera: there is no print damage to recover from, but glare, moiré and a mouse pointer over
/// the symbol are common, and M's ~15% recovery covers them. Going higher costs density, and small
/// modules are what actually makes screen scans fail: the 839-byte, 3-peer config in the tests needs
/// version 20 (97 modules per side) at L, 23 (109) at M, 28 (129) at Q and 32 (145) at H. M holds up
/// to 2331 bytes: the interface section plus about nine peers of the size in that config.
public enum MeshQR {
    /// Renders `text` (UTF-8, 8-bit mode, byte-exact) as an SVG document.
    ///
    /// - Parameters:
    ///   - text: the payload, typically a wg-quick config.
    ///   - errorCorrection: redundancy level; `.medium` suits configs shown on a screen (see the type's notes).
    ///   - moduleSize: pixels per module in the SVG's `width`/`height` (the drawing itself scales freely).
    /// - Throws: `QRCodeError.emptyInput` for "", `QRCodeError.inputTooLong` past the level's capacity.
    public static func svg(
        for text: String,
        errorCorrection: QRErrorCorrection = .medium,
        moduleSize: Int = 6
    ) throws(QRCodeError) -> String {
        try QRCode(encoding: text, errorCorrection: errorCorrection).svg(moduleSize: moduleSize)
    }
}
