/// SHA-256 (FIPS 180-4), streaming: feed the content in pieces of any size
/// with `update`, read the digest with `finalize`. Written by hand because the
/// project takes no packages; it is checked against the NIST vectors and
/// against `sha256sum`.
///
/// Speed: whole 64-byte blocks are compressed straight from the caller's
/// buffer (no copy); only a block split across `update` calls goes through the
/// 64-byte tail buffer. The message schedule lives in a fixed tuple on the
/// stack, never in an array.
public struct SHA256: Sendable {
    /// The chaining value H0...H7.
    private var h0: UInt32 = 0x6a09_e667, h1: UInt32 = 0xbb67_ae85
    private var h2: UInt32 = 0x3c6e_f372, h3: UInt32 = 0xa54f_f53a
    private var h4: UInt32 = 0x510e_527f, h5: UInt32 = 0x9b05_688c
    private var h6: UInt32 = 0x1f83_d9ab, h7: UInt32 = 0x5be0_cd19
    /// Bytes of a block not yet complete (fewer than 64 used).
    private var tail: Block = (0, 0, 0, 0, 0, 0, 0, 0)
    private var tailCount = 0
    /// Total message length so far, in bytes.
    private var length: UInt64 = 0

    public init() {}

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard var base = bytes.baseAddress, !bytes.isEmpty else { return }
        var remaining = bytes.count
        length &+= UInt64(remaining)
        if tailCount > 0 {
            let take = min(64 - tailCount, remaining)
            let filled = tailCount
            withUnsafeMutableBytes(of: &tail) { $0.baseAddress!.advanced(by: filled).copyMemory(from: base, byteCount: take) }
            tailCount += take
            base += take
            remaining -= take
            guard tailCount == 64 else { return }
            let block = tail
            withUnsafeBytes(of: block) { compress($0.baseAddress!, blocks: 1) }
            tailCount = 0
        }
        let whole = remaining / 64
        if whole > 0 {
            compress(base, blocks: whole)
            base += whole * 64
            remaining -= whole * 64
        }
        if remaining > 0 {
            withUnsafeMutableBytes(of: &tail) { $0.baseAddress!.copyMemory(from: base, byteCount: remaining) }
            tailCount = remaining
        }
    }

    public mutating func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    /// The 32-byte digest of everything fed so far. The hasher is not changed:
    /// more `update`s continue the same message.
    public func finalize() -> [UInt8] {
        var copy = self
        let bitLength = length &* 8
        // 0x80, zeros up to 56 mod 64, then the length in bits, big-endian.
        let padding = (tailCount < 56 ? 56 : 120) - tailCount
        var trailer = [UInt8](repeating: 0, count: padding + 8)
        trailer[0] = 0x80
        for index in 0..<8 { trailer[padding + index] = UInt8(truncatingIfNeeded: bitLength >> (56 - 8 * index)) }
        copy.update(trailer)
        var digest = [UInt8]()
        digest.reserveCapacity(32)
        for word in [copy.h0, copy.h1, copy.h2, copy.h3, copy.h4, copy.h5, copy.h6, copy.h7] {
            digest.append(UInt8(truncatingIfNeeded: word >> 24))
            digest.append(UInt8(truncatingIfNeeded: word >> 16))
            digest.append(UInt8(truncatingIfNeeded: word >> 8))
            digest.append(UInt8(truncatingIfNeeded: word))
        }
        return digest
    }

    public static func hash(_ bytes: [UInt8]) -> [UInt8] {
        var hasher = SHA256()
        hasher.update(bytes)
        return hasher.finalize()
    }

    /// Lower-case hex, two digits per byte.
    public static func hex(_ digest: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var text = [UInt8]()
        text.reserveCapacity(digest.count * 2)
        for byte in digest {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// Runs the compression function over `blocks` consecutive 64-byte blocks
    /// at `base` (any alignment).
    private mutating func compress(_ base: UnsafeRawPointer, blocks: Int) {
        var a0 = h0, b0 = h1, c0 = h2, d0 = h3, e0 = h4, f0 = h5, g0 = h6, hh0 = h7
        let zero: Block = (0, 0, 0, 0, 0, 0, 0, 0)
        var w: Schedule = (zero, zero, zero, zero)
        withUnsafeMutableBytes(of: &w) { raw in
            let w = raw.baseAddress!.assumingMemoryBound(to: UInt32.self)
            SHA256.roundConstants.withUnsafeBufferPointer { constants in
                let k = constants.baseAddress!
                for blockIndex in 0..<blocks {
                    let block = base + blockIndex * 64
                    for t in 0..<16 {
                        w[t] = UInt32(bigEndian: block.loadUnaligned(fromByteOffset: t * 4, as: UInt32.self))
                    }
                    for t in 16..<64 {
                        let x = w[t - 15], y = w[t - 2]
                        let s0 = x.rotatedRight(7) ^ x.rotatedRight(18) ^ (x >> 3)
                        let s1 = y.rotatedRight(17) ^ y.rotatedRight(19) ^ (y >> 10)
                        w[t] = w[t - 16] &+ s0 &+ w[t - 7] &+ s1
                    }
                    var a = a0, b = b0, c = c0, d = d0, e = e0, f = f0, g = g0, h = hh0
                    for t in 0..<64 {
                        let sigma1 = e.rotatedRight(6) ^ e.rotatedRight(11) ^ e.rotatedRight(25)
                        let choose = (e & f) ^ (~e & g)
                        let t1 = h &+ sigma1 &+ choose &+ k[t] &+ w[t]
                        let sigma0 = a.rotatedRight(2) ^ a.rotatedRight(13) ^ a.rotatedRight(22)
                        let majority = (a & b) ^ (a & c) ^ (b & c)
                        let t2 = sigma0 &+ majority
                        h = g
                        g = f
                        f = e
                        e = d &+ t1
                        d = c
                        c = b
                        b = a
                        a = t1 &+ t2
                    }
                    a0 &+= a
                    b0 &+= b
                    c0 &+= c
                    d0 &+= d
                    e0 &+= e
                    f0 &+= f
                    g0 &+= g
                    hh0 &+= h
                }
            }
        }
        (h0, h1, h2, h3, h4, h5, h6, h7) = (a0, b0, c0, d0, e0, f0, g0, hh0)
    }

    /// 64 bytes of storage with no heap allocation.
    private typealias Block = (
        UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64
    )
    /// The 64-word message schedule, on the stack.
    private typealias Schedule = (
        Block, Block, Block, Block
    )

    /// K: the first 32 bits of the fractional parts of the cube roots of the
    /// first 64 primes.
    private static let roundConstants: [UInt32] = [
        0x428a_2f98, 0x7137_4491, 0xb5c0_fbcf, 0xe9b5_dba5, 0x3956_c25b, 0x59f1_11f1, 0x923f_82a4, 0xab1c_5ed5,
        0xd807_aa98, 0x1283_5b01, 0x2431_85be, 0x550c_7dc3, 0x72be_5d74, 0x80de_b1fe, 0x9bdc_06a7, 0xc19b_f174,
        0xe49b_69c1, 0xefbe_4786, 0x0fc1_9dc6, 0x240c_a1cc, 0x2de9_2c6f, 0x4a74_84aa, 0x5cb0_a9dc, 0x76f9_88da,
        0x983e_5152, 0xa831_c66d, 0xb003_27c8, 0xbf59_7fc7, 0xc6e0_0bf3, 0xd5a7_9147, 0x06ca_6351, 0x1429_2967,
        0x27b7_0a85, 0x2e1b_2138, 0x4d2c_6dfc, 0x5338_0d13, 0x650a_7354, 0x766a_0abb, 0x81c2_c92e, 0x9272_2c85,
        0xa2bf_e8a1, 0xa81a_664b, 0xc24b_8b70, 0xc76c_51a3, 0xd192_e819, 0xd699_0624, 0xf40e_3585, 0x106a_a070,
        0x19a4_c116, 0x1e37_6c08, 0x2748_774c, 0x34b0_bcb5, 0x391c_0cb3, 0x4ed8_aa4a, 0x5b9c_ca4f, 0x682e_6ff3,
        0x748f_82ee, 0x78a5_636f, 0x84c8_7814, 0x8cc7_0208, 0x90be_fffa, 0xa450_6ceb, 0xbef9_a3f7, 0xc671_78f2,
    ]
}

extension UInt32 {
    @inline(__always)
    fileprivate func rotatedRight(_ count: UInt32) -> UInt32 { (self &>> count) | (self &<< (32 &- count)) }
}
