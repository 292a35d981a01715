/// Parsers for the kinds of value options take, one syntax for every program.
/// Each error says what was expected and names the option as `name` spells it.
public enum Value {
    /// An integer; digits may be grouped with `_` (`10_000`).
    public static func integer(_ text: String, _ name: String, in range: ClosedRange<Int>) throws(UsageError) -> Int {
        guard let digits = ungrouped(text), let value = Int(digits), range.contains(value) else {
            throw UsageError(
                "invalid value '\(text)' for \(name): expected an integer from \(range.lowerBound) to \(range.upperBound)")
        }
        return value
    }

    /// Bytes: an integer with an optional binary suffix K, M or G (KiB, MiB, GiB).
    public static func size(_ text: String, _ name: String, minimum: Int) throws(UsageError) -> Int {
        var digits = Substring(text)
        var multiplier = 1
        let lowered = text.lowercased()
        for (suffixes, factor) in [(["kib", "k", "kb"], 1 << 10), (["mib", "m", "mb"], 1 << 20), (["gib", "g", "gb"], 1 << 30)] {
            if let suffix = suffixes.first(where: { lowered.hasSuffix($0) }) {
                digits = text.dropLast(suffix.count)
                multiplier = factor
                break
            }
        }
        guard let plain = ungrouped(String(digits)), let value = Int(plain), value >= 0,
            value <= Int(Int32.max) / multiplier * 1024, value * multiplier >= minimum
        else {
            throw UsageError(
                "invalid value '\(text)' for \(name): expected a size in bytes of at least \(minimum) (suffixes K, M, G allowed)")
        }
        return value * multiplier
    }

    /// Seconds: a decimal number from 0 (or above 0 when `positive`) to `maximum`.
    public static func seconds(
        _ text: String, _ name: String, positive: Bool = false, maximum: Double = 31_536_000
    ) throws(UsageError) -> Double {
        guard let plain = ungrouped(text), let value = Double(plain), value.isFinite,
            positive ? value > 0 : value >= 0, value <= maximum
        else {
            throw UsageError(
                "invalid value '\(text)' for \(name): expected a number of seconds (\(positive ? "more than 0" : "0 or more"), at most \(Int(maximum)))")
        }
        return value
    }

    /// A decimal number above 0, at most `maximum` (a rate).
    public static func positive(_ text: String, _ name: String, maximum: Double) throws(UsageError) -> Double {
        guard let plain = ungrouped(text), let value = Double(plain), value.isFinite, value > 0, value <= maximum else {
            throw UsageError("invalid value '\(text)' for \(name): expected a number above 0, at most \(Int(maximum))")
        }
        return value
    }

    /// One of an enumeration's raw values.
    public static func choice<T: RawRepresentable & CaseIterable>(_ text: String, _ name: String, as: T.Type) throws(UsageError)
        -> T where T.RawValue == String
    {
        guard let value = T(rawValue: text) else {
            let names = T.allCases.map(\.rawValue).joined(separator: ", ")
            throw UsageError("invalid value '\(text)' for \(name): expected one of \(names)")
        }
        return value
    }

    /// yes/no (also true/false, on/off, 1/0).
    public static func boolean(_ text: String, _ name: String) throws(UsageError) -> Bool {
        switch text.lowercased() {
        case "yes", "true", "on", "1": return true
        case "no", "false", "off", "0": return false
        default: throw UsageError("invalid value '\(text)' for \(name): expected yes or no")
        }
    }

    public static func path(_ text: String, _ name: String) throws(UsageError) -> String {
        guard !text.isEmpty, !text.contains("\0") else {
            throw UsageError("invalid value '\(text)' for \(name): expected a file path")
        }
        return text
    }

    /// An address or host name: not empty, no blanks, no NUL. Whether it
    /// resolves is for the resolver to say, with its own words.
    public static func host(_ text: String, _ name: String) throws(UsageError) -> String {
        guard !text.isEmpty, !text.contains(where: { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\0" }) else {
            throw UsageError("invalid value '\(text)' for \(name): expected an address or host name")
        }
        return text
    }

    /// `HOST:PORT`, an IPv6 host in brackets (`[::1]:9107`); the port 0 to 65535.
    public static func endpoint(_ text: String, _ name: String) throws(UsageError) -> (host: String, port: Int)? {
        let invalid = UsageError(
            "invalid value '\(text)' for \(name): expected HOST:PORT (an IPv6 address in brackets: [::1]:9107)")
        guard let colon = text.lastIndex(of: ":") else { throw invalid }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") {
            host = String(host.dropFirst().dropLast())
        } else if host.contains(":") {
            throw invalid
        }
        let digits = text[text.index(after: colon)...]
        guard !digits.isEmpty, digits.allSatisfy(\.isASCIIDigit), let port = Int(digits), port <= 65535,
            (try? Value.host(host, name)) != nil
        else { throw invalid }
        return (host, port)
    }

    /// `text` without the `_` that group digits, or nil when an `_` does not
    /// stand between two digits (`_1`, `1__000`, `1_`).
    static func ungrouped(_ text: String) -> String? {
        guard text.contains("_") else { return text }
        let characters = Array(text)
        for (index, character) in characters.enumerated() where character == "_" {
            guard index > 0, index + 1 < characters.count, characters[index - 1].isASCIIDigit,
                characters[index + 1].isASCIIDigit
            else { return nil }
        }
        return String(characters.filter { $0 != "_" })
    }
}

extension Character {
    var isASCIIDigit: Bool { ("0"..."9").contains(self) }
}
