import EchoChatCore
import EchoChatTestSupport
import Foundation
import Testing

extension RequiredTool {
    /// coreutils is essential on Debian, but a bare image may still lack it.
    static let sha256sum = RequiredTool("sha256sum", package: "coreutils")
}

/// The hand-written SHA-256 (EchoChatCore) against coreutils' `sha256sum` on
/// the same bytes written to files: every length across the padding
/// boundaries, and random files of a MiB and more. The NIST vectors and the
/// chunking checks are in-memory tests (EchoChatCoreTests, SHA256Tests).
@Suite("SHA256 against sha256sum")
struct SHA256SumTests {
    /// A fresh directory under the system's temporary directory, removed by `body`'s end.
    func withScratchDirectory<T>(_ body: (String) throws -> T) throws -> T {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("echochat-sha-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        return try body(directory)
    }

    /// `sha256sum`'s hex digest of each file, in order.
    func sha256sum(_ paths: [String]) throws -> [String] {
        let result = try runProgram(try RequiredTool.sha256sum.path(), ["--"] + paths, timeout: 60)
        guard result.status == 0 else { throw TestFailure("sha256sum exited with \(result.status): \(result.stderr)") }
        let digests = result.stdout.split(separator: "\n").map { String($0.prefix(64)) }
        guard digests.count == paths.count else { throw TestFailure("sha256sum printed \(result.stdout.debugDescription)") }
        return digests
    }

    func randomBytes(_ count: Int, _ generator: inout some RandomNumberGenerator) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var index = 0
        while index < count {
            var word = generator.next()
            for _ in 0..<8 where index < count {
                bytes[index] = UInt8(truncatingIfNeeded: word)
                word >>= 8
                index += 1
            }
        }
        return bytes
    }

    /// Lengths 0...130 (the 55/56, 63/64, 119/120 padding boundaries and
    /// around), one file each, one `sha256sum` run.
    @Test(.requires(.sha256sum)) func everyLengthAroundThePaddingBoundaries() throws {
        var generator = SystemRandomNumberGenerator()
        try withScratchDirectory { directory in
            var inputs: [[UInt8]] = []
            var paths: [String] = []
            for length in 0...130 {
                let input = randomBytes(length, &generator)
                let path = "\(directory)/\(length).bin"
                try Data(input).write(to: URL(fileURLWithPath: path))
                inputs.append(input)
                paths.append(path)
            }
            let expected = try sha256sum(paths)
            for (length, input) in inputs.enumerated() {
                #expect(SHA256.hex(SHA256.hash(input)) == expected[length], "length \(length): \(input)")
            }
        }
    }

    /// Random files of 1 MiB and more (odd sizes, so the last block is
    /// partial), hashed whole and streamed in random pieces.
    @Test(.requires(.sha256sum)) func randomFilesOfAMegabyteAndMore() throws {
        var generator = SystemRandomNumberGenerator()
        try withScratchDirectory { directory in
            let sizes = [1 << 20, (1 << 20) + 1, (3 << 20) + 55, (2 << 20) - 9]
            var inputs: [[UInt8]] = []
            for (index, size) in sizes.enumerated() {
                let input = randomBytes(size, &generator)
                try Data(input).write(to: URL(fileURLWithPath: "\(directory)/\(index).bin"))
                inputs.append(input)
            }
            let expected = try sha256sum(sizes.indices.map { "\(directory)/\($0).bin" })
            for (index, input) in inputs.enumerated() {
                #expect(SHA256.hex(SHA256.hash(input)) == expected[index], "file \(index) of \(input.count) bytes")
                var hasher = SHA256()
                var offset = 0
                input.withUnsafeBytes { raw in
                    while offset < raw.count {
                        let end = min(raw.count, offset + Int.random(in: 1...100_000, using: &generator))
                        hasher.update(UnsafeRawBufferPointer(rebasing: raw[offset..<end]))
                        offset = end
                    }
                }
                #expect(SHA256.hex(hasher.finalize()) == expected[index], "file \(index) streamed in random pieces")
            }
        }
    }
}
