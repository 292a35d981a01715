/// Where a setting's value came from, as `--check-config` shows it.
public enum ValueSource: Equatable, Sendable, CustomStringConvertible {
    case defaultValue
    case file(path: String, line: Int)
    case environment(variable: String)
    case flag(String)

    public var description: String {
        switch self {
        case .defaultValue: "default"
        case .file(let path, let line): "file \(path):\(line)"
        case .environment(let variable): "env \(variable)"
        case .flag(let spelling): "flag \(spelling)"
        }
    }
}

/// Settings built up in layers, each overriding the one before: defaults <
/// config file < environment < flags. `sources` says, per setting name, which
/// layer set the value in force (absent: the default).
public struct LayeredSettings<Settings> {
    public var settings: Settings
    public var sources: [String: ValueSource] = [:]

    public init(_ defaults: Settings) { settings = defaults }

    public func source(of name: String) -> ValueSource { sources[name] ?? .defaultValue }
}

extension OptionParser {
    /// The environment variable for a setting: `prefix` + the key upper-cased,
    /// `-` → `_` (`ECHOCHAT_` + `max-clients` = `ECHOCHAT_MAX_CLIENTS`).
    public static func environmentName(prefix: String, key: String) -> String {
        prefix + String(key.uppercased().map { $0 == "-" ? "_" : $0 })
    }

    /// Applies `key = value` lines to the settings options (`isSetting`); `#`
    /// starts a comment, blank lines are fine. Errors name the file and line:
    /// `echochat.conf:12: unknown key 'foo'`.
    public func applyConfigFile(_ text: String, path: String, to layers: inout LayeredSettings<Settings>) throws(UsageError) {
        for (number, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var line = Substring(rawLine)
            if let hash = line.firstIndex(of: "#") { line = line[..<hash] }
            let trimmed = line.trimmingBlanks()
            if trimmed.isEmpty { continue }
            let location = "\(path):\(number + 1)"
            guard let equals = trimmed.firstIndex(of: "=") else {
                throw UsageError("\(location): expected 'key = value', got '\(trimmed)'")
            }
            let key = String(trimmed[..<equals].trimmingBlanks())
            let value = String(trimmed[trimmed.index(after: equals)...].trimmingBlanks())
            guard let option = options.first(where: { $0.isSetting && $0.name == key }) else {
                throw UsageError("\(location): unknown key '\(key)'")
            }
            guard !value.isEmpty else { throw UsageError("\(location): missing value for '\(key)'") }
            do {
                try option.apply(&layers.settings, value, "'\(key)'")
            } catch {
                throw UsageError("\(location): \(error.message)")
            }
            layers.sources[key] = .file(path: path, line: number + 1)
        }
    }

    /// Applies every settings option whose variable (`environmentName`) is
    /// set; variables with the prefix that name no setting are ignored. Errors
    /// name the variable.
    public func applyEnvironment(
        prefix: String, lookup: (String) -> String?, to layers: inout LayeredSettings<Settings>
    ) throws(UsageError) {
        for option in options where option.isSetting {
            let variable = Self.environmentName(prefix: prefix, key: option.name)
            guard let value = lookup(variable) else { continue }
            try option.apply(&layers.settings, value, variable)
            layers.sources[option.name] = .environment(variable: variable)
        }
    }

    /// Applies the settings options found on the command line, in order.
    public func applyFlags(_ found: [Occurrence<Settings>], to layers: inout LayeredSettings<Settings>) throws(UsageError) {
        for occurrence in found where occurrence.option.isSetting {
            try occurrence.option.apply(&layers.settings, occurrence.value, occurrence.spelling)
            layers.sources[occurrence.option.name] = .flag(occurrence.spelling)
        }
    }

    /// The settings in config-file syntax, one `key = value` per line, each
    /// with its source as a comment, so the output is itself a valid config
    /// file. Settings whose value is empty (an unset path) are left out.
    public func render(_ layers: LayeredSettings<Settings>) -> String {
        let lines: [(String, String)] = options.compactMap { option in
            guard option.isSetting, let value = option.current?(layers.settings), !value.isEmpty else { return nil }
            return ("\(option.name) = \(value)", "# \(layers.source(of: option.name))")
        }
        let width = (lines.map(\.0.count).max() ?? 0) + 2
        return lines.map { $0.0 + String(repeating: " ", count: width - $0.0.count) + $0.1 + "\n" }.joined()
    }
}

extension StringProtocol {
    /// Without leading and trailing spaces, tabs and CRs.
    func trimmingBlanks() -> SubSequence {
        let isBlank: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\r" }
        guard let start = firstIndex(where: { !isBlank($0) }) else { return self[endIndex...] }
        let end = lastIndex(where: { !isBlank($0) })!
        return self[start...end]
    }
}

extension LayeredSettings: Equatable where Settings: Equatable {}
extension LayeredSettings: Sendable where Settings: Sendable {}
