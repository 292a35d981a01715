import Foundation

/// A strict reader of the Prometheus text exposition format (0.0.4), for
/// tests: it throws on anything a scraper could choke on, instead of
/// skipping it.
///
/// Checked: every line is `# HELP name text`, `# TYPE name type` or a sample
/// `name{label="value",...} number` (no blank or other lines); each family's
/// HELP and TYPE come once, before its samples; a sample belongs to the
/// family declared last; names and label names are valid; label values are
/// properly escaped; values are numbers; no sample (name and labels) repeats.
public struct Exposition: Sendable {
    public struct Sample: Sendable, Equatable {
        public var name: String
        public var labels: [String: String]
        public var value: Double
    }

    public struct Family: Sendable {
        public var name: String
        public var help: String
        public var type: String
        public var samples: [Sample] = []
    }

    public private(set) var families: [Family] = []

    public init(parsing text: String) throws {
        guard text.hasSuffix("\n") else { throw TestFailure("the exposition does not end with a line feed") }
        var seen = Set<String>()
        var pendingHelp: (name: String, help: String)?
        for (number, line) in text.dropLast().split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            func fail(_ why: String) -> TestFailure { TestFailure("line \(number + 1) \(why): \(line.debugDescription)") }
            if line.hasPrefix("# HELP ") {
                let rest = line.dropFirst(7)
                let name = String(rest.prefix { $0 != " " })
                guard Self.isMetricName(name), rest.count > name.count + 1 else { throw fail("is a bad HELP line") }
                guard !families.contains(where: { $0.name == name }), pendingHelp == nil else {
                    throw fail("repeats a HELP or has no TYPE after the last one")
                }
                pendingHelp = (name, String(rest.dropFirst(name.count + 1)))
            } else if line.hasPrefix("# TYPE ") {
                let words = line.dropFirst(7).split(separator: " ", omittingEmptySubsequences: false).map(String.init)
                guard words.count == 2, let help = pendingHelp, help.name == words[0],
                    ["counter", "gauge", "untyped", "summary", "histogram"].contains(words[1])
                else { throw fail("is a bad TYPE line or does not follow its HELP") }
                families.append(Family(name: words[0], help: help.help, type: words[1]))
                pendingHelp = nil
            } else {
                guard pendingHelp == nil, var family = families.popLast() else { throw fail("is a sample before any HELP and TYPE") }
                let sample = try Self.sample(String(line), fail: fail)
                let belongs = sample.name == family.name
                    || (family.type == "counter" && sample.name == family.name + "_total" && !family.name.hasSuffix("_total"))
                guard belongs else { throw fail("is a sample of another family than \(family.name)") }
                let identity = sample.name + "{" + sample.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
                    .joined(separator: ",") + "}"
                guard seen.insert(identity).inserted else { throw fail("repeats a sample") }
                family.samples.append(sample)
                families.append(family)
            }
        }
        if let pendingHelp { throw TestFailure("HELP for \(pendingHelp.name) without TYPE") }
        if let empty = families.first(where: { $0.samples.isEmpty }) { throw TestFailure("family \(empty.name) has no sample") }
    }

    public func family(_ name: String) -> Family? { families.first { $0.name == name } }

    /// The value of the sample `name` with exactly `labels`.
    public func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        families.lazy.flatMap(\.samples).first { $0.name == name && $0.labels == labels }?.value
    }

    static func isMetricName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, !("0"..."9").contains(first) else { return false }
        return name.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "_" || $0 == ":") }
    }

    static func isLabelName(_ name: String) -> Bool { isMetricName(name) && !name.contains(":") }

    static func sample(_ line: String, fail: (String) -> TestFailure) throws -> Sample {
        var rest = Substring(line)
        let name = String(rest.prefix { $0 != "{" && $0 != " " })
        guard isMetricName(name) else { throw fail("has a bad metric name") }
        rest = rest.dropFirst(name.count)
        var labels: [String: String] = [:]
        if rest.first == "{" {
            rest = rest.dropFirst()
            while rest.first != "}" {
                let label = String(rest.prefix { $0 != "=" })
                guard isLabelName(label), labels[label] == nil else { throw fail("has a bad or repeated label name") }
                rest = rest.dropFirst(label.count)
                guard rest.hasPrefix("=\"") else { throw fail("has a label without =\"") }
                rest = rest.dropFirst(2)
                var value = ""
                while true {
                    guard let character = rest.first else { throw fail("has an unterminated label value") }
                    rest = rest.dropFirst()
                    if character == "\"" { break }
                    if character == "\n" { throw fail("has a raw line feed in a label value") }
                    if character == "\\" {
                        switch rest.first {
                        case "\\": value.append("\\")
                        case "\"": value.append("\"")
                        case "n": value.append("\n")
                        default: throw fail("has a bad escape in a label value")
                        }
                        rest = rest.dropFirst()
                    } else {
                        value.append(character)
                    }
                }
                labels[label] = value
                if rest.first == "," { rest = rest.dropFirst() } else if rest.first != "}" { throw fail("has labels not separated by ,") }
            }
            rest = rest.dropFirst()
        }
        guard rest.first == " " else { throw fail("has no space before the value") }
        let words = rest.dropFirst().split(separator: " ", omittingEmptySubsequences: false)
        guard (1...2).contains(words.count), let value = Double(words[0]),
            words.count == 1 || Int64(words[1]) != nil
        else { throw fail("has a value that is not a number (or a bad timestamp)") }
        return Sample(name: name, labels: labels, value: value)
    }
}
