import Testing

@testable import EchoChatCore

/// SHA-256 against the FIPS 180-4 example vectors (NIST CSRC "SHA-256"
/// examples and the long-message test), fed whole, byte by byte and in seeded
/// random pieces. The comparison with `sha256sum` on the same bytes needs the
/// test support's process runner and lives with the end-to-end tests
/// (EchoChatServerTests, SHA256SumTests).
@Suite("SHA256")
struct SHA256Tests {
    static let vectors: [(message: String, digest: String)] = [
        ("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        ("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        (
            "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        ),
        (
            "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"
        ),
    ]

    /// The digest of `input` fed in the pieces `chunking` cuts.
    static func digest(_ input: [UInt8], _ chunking: Chunking) -> [UInt8] {
        var hasher = SHA256()
        var cutter = Chunking.Cutter(chunking)
        input.withUnsafeBytes { raw in
            for piece in cutter.pieces(count: input.count) {
                hasher.update(UnsafeRawBufferPointer(rebasing: raw[piece]))
            }
        }
        return hasher.finalize()
    }

    @Test func nistVectors() {
        for (message, expected) in Self.vectors {
            #expect(SHA256.hex(SHA256.hash(bytes(message))) == expected, "\(message.debugDescription)")
            for chunking in Chunking.all(forLength: message.utf8.count) {
                #expect(SHA256.hex(Self.digest(bytes(message), chunking)) == expected, "\(message.debugDescription) \(chunking)")
            }
        }
    }

    @Test func oneMillionA() {
        let input = [UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000)
        let expected = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        for chunking in Chunking.standard {
            #expect(SHA256.hex(Self.digest(input, chunking)) == expected, "\(chunking)")
        }
        // As the NIST long-message test feeds it: 1000 updates of 1000 bytes.
        var hasher = SHA256()
        let thousand = [UInt8](repeating: UInt8(ascii: "a"), count: 1000)
        for _ in 0..<1000 { hasher.update(thousand) }
        #expect(SHA256.hex(hasher.finalize()) == expected)
    }

    /// Every length across two padding boundaries (55/56 and 119/120 bytes
    /// decide whether the length fits in the last block; 63/64 fill it): the
    /// same digest whatever the pieces.
    @Test func piecesNeverChangeTheDigestAroundThePaddingBoundaries() {
        var generator = SeededGenerator(seed: 0x5eed)
        for length in 0...130 {
            let input = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let whole = SHA256.hash(input)
            #expect(whole.count == 32)
            for chunking in Chunking.standard + [.split(at: 55), .split(at: 56), .split(at: 63), .split(at: 64)] {
                #expect(Self.digest(input, chunking) == whole, "length \(length), \(chunking)")
            }
        }
    }

    @Test func finalizeLeavesTheHasherUsable() {
        var hasher = SHA256()
        hasher.update(bytes("ab"))
        let early = hasher.finalize()
        #expect(hasher.finalize() == early)
        #expect(early == SHA256.hash(bytes("ab")))
        hasher.update(bytes("c"))
        #expect(SHA256.hex(hasher.finalize()) == Self.vectors[1].digest)
    }

    @Test func emptyUpdatesChangeNothing() {
        var hasher = SHA256()
        hasher.update([])
        hasher.update(bytes("abc"))
        hasher.update(UnsafeRawBufferPointer(start: nil, count: 0))
        hasher.update([])
        #expect(SHA256.hex(hasher.finalize()) == Self.vectors[1].digest)
    }

    @Test func hexIsLowerCaseTwoDigitsPerByte() {
        #expect(SHA256.hex([0x00, 0x0f, 0xa0, 0xff]) == "000fa0ff")
        #expect(SHA256.hex([]) == "")
    }
}
