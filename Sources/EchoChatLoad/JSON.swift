/// A JSON value, written by hand (no Foundation): objects keep their key order.
public indirect enum JSONValue: Equatable, Sendable {
    case int(Int)
    case number(Double, decimals: Int)
    case string(String)
    case bool(Bool)
    case object([(String, JSONValue)])
    case array([JSONValue])
    case null

    public static func == (lhs: JSONValue, rhs: JSONValue) -> Bool { lhs.text == rhs.text }

    /// Compact JSON text.
    public var text: String {
        switch self {
        case .int(let value): return String(value)
        case .number(let value, let decimals):
            return value.isFinite ? Format.fixed(value, decimals: decimals) : "null"
        case .string(let value): return Self.quote(value)
        case .bool(let value): return value ? "true" : "false"
        case .null: return "null"
        case .array(let values): return "[" + values.map(\.text).joined(separator: ",") + "]"
        case .object(let pairs):
            return "{" + pairs.map { Self.quote($0.0) + ":" + $0.1.text }.joined(separator: ",") + "}"
        }
    }

    static func quote(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }

    /// The number stored under `key` in a flat JSON object's text (enough to
    /// read the one-line output of the C reference load generator).
    public static func number(forKey key: String, in text: String) -> Double? {
        guard let rest = text.suffix(after: "\"\(key)\":") else { return nil }
        let allowed: Set<Character> = [".", "-", "+", "e", "E"]
        let digits = rest.drop(while: { $0 == " " }).prefix(while: { $0.isNumber || allowed.contains($0) })
        return Double(String(digits))
    }
}

/// Number formatting without Foundation.
public enum Format {
    /// `value` rounded to `decimals` places: `fixed(3.14159, decimals: 2)` = "3.14".
    public static func fixed(_ value: Double, decimals: Int) -> String {
        guard value.isFinite else { return value.isNaN ? "nan" : (value > 0 ? "inf" : "-inf") }
        var scale = 1.0
        for _ in 0..<decimals { scale *= 10 }
        let scaled = (abs(value) * scale).rounded()
        guard scaled < 9e18 else { return String(value) }
        let whole = UInt64(scaled)
        let integer = whole / UInt64(scale)
        let fraction = whole % UInt64(scale)
        var text = (value < 0 && whole != 0 ? "-" : "") + String(integer)
        if decimals > 0 {
            let digits = String(fraction)
            text += "." + String(repeating: "0", count: decimals - digits.count) + digits
        }
        return text
    }

    /// 1234567 -> "1.23M", 98765 -> "98.8k", 512 -> "512".
    public static func compact(_ value: Double) -> String {
        let magnitude = abs(value)
        if magnitude >= 1e9 { return fixed(value / 1e9, decimals: magnitude >= 1e11 ? 0 : 2) + "G" }
        if magnitude >= 1e6 { return fixed(value / 1e6, decimals: magnitude >= 1e8 ? 0 : 2) + "M" }
        if magnitude >= 1e3 { return fixed(value / 1e3, decimals: magnitude >= 1e5 ? 0 : 1) + "k" }
        return fixed(value, decimals: magnitude >= 100 || value == value.rounded() ? 0 : 1)
    }

    /// Microseconds as a short duration: "87 µs", "1.25 ms", "3.2 s".
    public static func micros(_ value: Double) -> String {
        if value >= 1_000_000 { return fixed(value / 1_000_000, decimals: 2) + " s" }
        if value >= 1000 { return fixed(value / 1000, decimals: 2) + " ms" }
        return fixed(value, decimals: value >= 100 ? 0 : 1) + " µs"
    }

    /// Bytes: "512 B", "13.8 KiB", "141 MiB".
    public static func bytes(_ value: Double) -> String {
        if abs(value) >= 1_073_741_824 { return fixed(value / 1_073_741_824, decimals: 2) + " GiB" }
        if abs(value) >= 1_048_576 { return fixed(value / 1_048_576, decimals: 1) + " MiB" }
        if abs(value) >= 10 * 1024 { return fixed(value / 1024, decimals: 1) + " KiB" }
        return fixed(value, decimals: 0) + " B"
    }

    /// Thousands separated by commas: 10000 -> "10,000".
    public static func grouped(_ value: Int) -> String {
        let digits = String(abs(value))
        var out = ""
        for (index, character) in digits.enumerated() {
            if index > 0 && (digits.count - index) % 3 == 0 { out += "," }
            out.append(character)
        }
        return (value < 0 ? "-" : "") + out
    }

    /// `text` padded with spaces to `width` (left-aligned) or right-aligned.
    public static func pad(_ text: String, _ width: Int, right: Bool = false) -> String {
        let fill = String(repeating: " ", count: max(0, width - text.count))
        return right ? fill + text : text + fill
    }
}

extension StringProtocol {
    /// What follows the first occurrence of `marker`, or nil (no Foundation here).
    func suffix(after marker: String) -> SubSequence? {
        let needle = Array(marker.utf8)
        guard !needle.isEmpty else { return self[...] }
        var index = startIndex
        while index < endIndex {
            if self[index...].utf8.starts(with: needle) {
                return self[self.utf8.index(index, offsetBy: needle.count)...]
            }
            index = self.index(after: index)
        }
        return nil
    }
}
