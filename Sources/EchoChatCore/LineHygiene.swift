/// Input hygiene for chat lines (docs/PROTOCOL.md §3.1 steps 2–4), applied to a
/// framed line before anything parses it.
public enum LineHygiene {
    /// Repairs invalid UTF-8 (one U+FFFD per maximal invalid subpart, as
    /// `String(decoding:as:)` does) and removes C0 controls except TAB, DEL and
    /// C1 controls. The result is valid UTF-8 with no terminal control bytes.
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

    /// C0 except TAB, DEL, C1.
    @inline(__always)
    static func isControl(_ value: UInt32) -> Bool {
        (value < 0x20 && value != 0x09) || (value >= 0x7F && value <= 0x9F)
    }

    /// Step 4: a line that is empty or holds only spaces and tabs is ignored.
    public static func isBlank(_ line: [UInt8]) -> Bool {
        line.allSatisfy { $0 == 0x20 || $0 == 0x09 }
    }
}
