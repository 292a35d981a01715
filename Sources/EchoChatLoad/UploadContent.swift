/// The content of one file of the upload mode: a pseudo-random byte stream
/// that is a pure function of the file's seed and the offset, so a client
/// can produce any part of any file it uploaded again when the file comes
/// back, without keeping it: word *k* (bytes 8k...8k+7, little-endian) is
/// SplitMix64 of `seed + k * golden`.
struct FileContent: Sendable, Equatable {
    let seed: UInt64

    static let golden: UInt64 = 0x9E37_79B9_7F4A_7C15

    /// SplitMix64's output function.
    @inline(__always)
    static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// The seed of file `index` of client `client` in a run seeded `run`:
    /// distinct for every (client, index) of a run, and between runs.
    static func seed(run: UInt64, client: Int, index: Int) -> UInt64 {
        mix(mix(run &+ UInt64(truncatingIfNeeded: client) &* golden) &+ UInt64(truncatingIfNeeded: index))
    }

    @inline(__always)
    func word(_ index: Int) -> UInt64 {
        Self.mix(seed &+ UInt64(truncatingIfNeeded: index) &* Self.golden)
    }

    /// Writes bytes `offset ..< offset + count` of the stream to `buffer`.
    func fill(_ buffer: UnsafeMutableRawPointer, offset: Int, count: Int) {
        guard count > 0 else { return }
        var written = 0
        var wordIndex = offset >> 3
        // A first word entered in its middle.
        let skip = offset & 7
        if skip != 0 {
            let value = word(wordIndex).littleEndian
            let take = min(8 - skip, count)
            withUnsafeBytes(of: value) { bytes in
                buffer.copyMemory(from: bytes.baseAddress! + skip, byteCount: take)
            }
            written = take
            wordIndex += 1
        }
        while count - written >= 8 {
            buffer.storeBytes(of: word(wordIndex).littleEndian, toByteOffset: written, as: UInt64.self)
            written += 8
            wordIndex += 1
        }
        if written < count {
            let value = word(wordIndex).littleEndian
            withUnsafeBytes(of: value) { bytes in
                (buffer + written).copyMemory(from: bytes.baseAddress!, byteCount: count - written)
            }
        }
    }

    /// The whole stream of `size` bytes (tests; the client never holds a file).
    func bytes(size: Int) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: size) { buffer, initialized in
            if size > 0 { fill(buffer.baseAddress!, offset: 0, count: size) }
            initialized = size
        }
    }
}

/// The lines of the upload protocol this client reads (PROTOCOL §5).
enum UploadLines {
    /// `* stored NAME (SIZE bytes, sha256 HEX)`: (name, size, hex).
    static func stored(_ line: String) -> (name: String, size: Int, hex: String)? {
        guard line.hasPrefix("* stored ") else { return nil }
        let fields = line.split(separator: " ", omittingEmptySubsequences: false)
        guard fields.count == 7, fields[3].first == "(", fields[4] == "bytes,", fields[5] == "sha256",
            fields[6].last == ")", let size = Int(fields[3].dropFirst()), size >= 0, !fields[2].isEmpty
        else { return nil }
        return (String(fields[2]), size, String(fields[6].dropLast()))
    }

    /// `* sending NAME SIZE sha256 HEX`: (name, size, hex).
    static func sending(_ line: String) -> (name: String, size: Int, hex: String)? {
        guard line.hasPrefix("* sending ") else { return nil }
        let fields = line.split(separator: " ", omittingEmptySubsequences: false)
        guard fields.count == 6, fields[4] == "sha256", let size = Int(fields[3]), size >= 0, !fields[2].isEmpty,
            fields[5].count == 64
        else { return nil }
        return (String(fields[2]), size, String(fields[5]))
    }
}
