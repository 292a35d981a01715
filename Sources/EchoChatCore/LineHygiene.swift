/// Input hygiene for chat lines (docs/PROTOCOL.md §3.1 steps 2–4), applied to a
/// framed line before anything parses it.
public enum LineHygiene {
    /// Repairs invalid UTF-8 (one U+FFFD per maximal invalid subpart, as
    /// `String(decoding:as:)` does) and removes C0 controls except TAB, DEL,
    /// C1 controls, the line and paragraph separators and the bidirectional
    /// formatting characters. The result is valid UTF-8 that can neither
    /// drive a terminal, nor break a line in two, nor reverse the text after it.
    public static func clean(_ line: UnsafeRawBufferPointer) -> [UInt8] {
        var asciiOnly = true
        var clean = true
        for byte in line {
            if byte >= 0x80 {
                asciiOnly = false
                break
            }
            if (byte < 0x20 && byte != 0x09) || byte == 0x7F { clean = false }
        }
        if asciiOnly {
            if clean { return Array(line) }
            return line.filter { !($0 < 0x20 && $0 != 0x09) && $0 != 0x7F }
        }
        let text = String(decoding: line, as: UTF8.self)
        var result: [UInt8] = []
        result.reserveCapacity(line.count)
        for scalar in text.unicodeScalars where !isControl(scalar.value) {
            result.append(contentsOf: UTF8.encode(scalar)!)
        }
        return result
    }

    /// §3.1 step 3: C0 except TAB, DEL, C1, U+2028/U+2029 and the bidi
    /// formatting characters (U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069).
    @inline(__always)
    public static func isControl(_ value: UInt32) -> Bool {
        if value < 0x20 { return value != 0x09 }
        if value < 0x7F { return false }
        if value <= 0x9F { return true }
        switch value {
        case 0x061C, 0x200E, 0x200F, 0x2028...0x202E, 0x2066...0x2069: return true
        default: return false
        }
    }

    /// Step 4: a line that is empty or holds only spaces and tabs is ignored.
    public static func isBlank(_ line: [UInt8]) -> Bool {
        line.allSatisfy { $0 == 0x20 || $0 == 0x09 }
    }
}
