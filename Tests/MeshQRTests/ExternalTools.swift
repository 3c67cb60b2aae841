import Foundation

/// Runs the command-line tools the round-trip tests check against (rsvg-convert, zbarimg).
enum ExternalTools {
    /// What a finished tool run left behind.
    struct Output {
        var status: Int32
        var stdout: Data
        var stderr: String
    }

    /// Why a tool could not be used at all.
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// Runs `tool` (looked up on PATH) with `arguments` and waits for it.
    ///
    /// A missing tool is an error, not a skip: scripts/deps.sh installs both, and a round trip that
    /// silently did not run would prove nothing.
    static func run(_ tool: String, _ arguments: [String]) throws -> Output {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [tool] + arguments
        let out = Pipe()
        // stderr goes to a file so that neither stream can fill a pipe and stall the tool.
        let errURL = FileManager.default.temporaryDirectory.appendingPathComponent("meshqr-\(UUID().uuidString).err")
        guard FileManager.default.createFile(atPath: errURL.path, contents: nil),
              let errHandle = FileHandle(forWritingAtPath: errURL.path) else {
            throw Failure(description: "cannot create \(errURL.path)")
        }
        defer {
            try? errHandle.close()
            try? FileManager.default.removeItem(at: errURL)
        }
        process.standardOutput = out
        process.standardError = errHandle
        process.standardInput = FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            throw Failure(description: "cannot start \(tool): \(error)")
        }
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let stderr = (try? String(contentsOf: errURL, encoding: .utf8)) ?? ""
        if process.terminationStatus == 127 {
            throw Failure(description: "\(tool) is not installed (scripts/deps.sh installs it): \(stderr)")
        }
        return Output(status: process.terminationStatus, stdout: stdout, stderr: stderr)
    }

    /// Rasterises an SVG document with rsvg-convert and returns the PNG's path.
    static func renderPNG(svg: String, in directory: URL) throws -> URL {
        let svgURL = directory.appendingPathComponent("code.svg")
        let pngURL = directory.appendingPathComponent("code.png")
        try Data(svg.utf8).write(to: svgURL)
        let result = try run("rsvg-convert", ["--format=png", "--output", pngURL.path, svgURL.path])
        guard result.status == 0 else {
            throw Failure(description: "rsvg-convert exited \(result.status): \(result.stderr)")
        }
        return pngURL
    }

    /// Decodes the one QR code in a PNG with zbarimg and returns its payload bytes, exactly.
    ///
    /// `-Sbinary` hands the payload over untouched: without it zbar guesses a charset and may convert
    /// the bytes, and it ends each symbol with a newline. In binary mode nothing is added (checked by
    /// the tests with payloads that do and do not end in a newline), so no stripping is done here.
    /// `--raw` drops the "QR-Code:" prefix.
    static func decodeQR(png: URL) throws -> [UInt8] {
        let result = try run("zbarimg", ["--raw", "-q", "-Sbinary", png.path])
        guard result.status == 0 else {
            throw Failure(description: "zbarimg exited \(result.status) (4 means no symbol found): \(result.stderr)")
        }
        return [UInt8](result.stdout)
    }

    /// A fresh scratch directory, removed by the caller.
    static func scratchDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("meshqr-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}
