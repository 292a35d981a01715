/// Command-line parsing and help for all of EchoChat's programs, by hand in
/// swift-argument-parser's conventions (the project takes no packages):
/// `USAGE:`/`OPTIONS:` help with `(default: …)`, `-h, --help`, `--version`,
/// errors on stderr as `Error: …` plus a usage hint, exit 64 for bad usage.
///
/// The syntax, the same for every program:
/// - `--name value` and `--name=value`; a short form takes `-c value`;
/// - a switch (no placeholder) takes no value: `--quiet=yes` is an error;
/// - `-h`/`--help` and `--version` end parsing where they stand;
/// - `--` ends the options; what follows, like any other word that is not an
///   option or an option's value (a lone `-` included), is an unexpected
///   argument, since no program takes operands;
/// - the word after an option that takes a value is its value, whatever it
///   looks like (`--json -`);
/// - a later occurrence of an option overrides an earlier one.
public struct OptionParser<Settings>: Sendable {
    /// The program as the user runs it (`echochat-load bench`).
    public let command: String
    /// The first lines of `--help`, after `OVERVIEW: `.
    public let overview: String
    public let options: [Option<Settings>]
    /// Sections after OPTIONS: a title (`KEYS (on a terminal)`) and its text.
    public let sections: [(title: String, body: String)]
    /// Extra usage lines under the first (`echochat-load bench [<options>]`).
    public let moreUsage: [String]

    public init(
        command: String, overview: String, options: [Option<Settings>],
        sections: [(title: String, body: String)] = [], moreUsage: [String] = []
    ) {
        self.command = command
        self.overview = overview
        self.options = options
        self.sections = sections
        self.moreUsage = moreUsage
    }

    /// What a command line asks for.
    public enum Scan: Sendable {
        case help
        case version
        /// The options in the order given.
        case options([Occurrence<Settings>])
    }

    /// Reads `arguments` (without the program name) without applying anything.
    public func scan(_ arguments: [String]) throws(UsageError) -> Scan {
        var found: [Occurrence<Settings>] = []
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            switch argument {
            case "-h", "--help": return .help
            case "--version": return .version
            case "--":
                if index < arguments.count { throw UsageError("unexpected argument '\(arguments[index])'") }
                continue
            default: break
            }
            let option: Option<Settings>
            var value: String?
            if argument.hasPrefix("--") {
                var name = String(argument.dropFirst(2))
                if let equals = name.firstIndex(of: "=") {
                    value = String(name[name.index(after: equals)...])
                    name = String(name[..<equals])
                }
                guard let match = options.first(where: { $0.name == name }) else {
                    throw UsageError("unknown option '--\(name)'")
                }
                option = match
            } else if argument.hasPrefix("-") && argument.count > 1 {
                guard let match = options.first(where: { $0.short == argument }) else {
                    throw UsageError("unknown option '\(argument)'")
                }
                option = match
            } else {
                throw UsageError("unexpected argument '\(argument)'")
            }
            if option.isSwitch {
                if value != nil { throw UsageError("'--\(option.name)' takes no value") }
                value = "yes"
            } else if value == nil {
                guard index < arguments.count else { throw UsageError("missing value for '--\(option.name)'") }
                value = arguments[index]
                index += 1
            }
            found.append(Occurrence(option: option, value: value!, spelling: "--\(option.name)"))
        }
        return .options(found)
    }

    /// What `parse(_:into:)` found besides the settings.
    public enum Outcome: Equatable, Sendable {
        case help
        case version
        /// The names of the options given.
        case parsed(given: Set<String>)
    }

    /// Scans `arguments` and applies each option to `settings` in order.
    public func parse(_ arguments: [String], into settings: inout Settings) throws(UsageError) -> Outcome {
        switch try scan(arguments) {
        case .help: return .help
        case .version: return .version
        case .options(let found):
            for occurrence in found {
                try occurrence.option.apply(&settings, occurrence.value, occurrence.spelling)
            }
            return .parsed(given: Set(found.map(\.option.name)))
        }
    }

    // MARK: - Help

    /// The usage line: the options marked `inUsage`, then `[<options>]` for the rest.
    public var usage: String {
        let named = options.filter(\.inUsage)
        var words = [command] + named.map(\.usageLabel)
        if named.count < options.count { words.append("[<options>]") }
        return words.joined(separator: " ")
    }

    /// The OPTIONS rows: each option, then `--version` and `-h, --help`.
    public var optionRows: String {
        var rows = options.map { option in
            (option.helpLabel, option.help + (option.defaultText.map { " (default: \($0))" } ?? ""))
        }
        rows.append(("--version", "Show the version."))
        rows.append(("-h, --help", "Show help information."))
        return Self.table(rows)
    }

    public var helpText: String {
        let usageLines = (["USAGE: \(usage)"] + moreUsage.map { "       " + $0 }).joined(separator: "\n")
        var text = "OVERVIEW: \(overview)\n\n\(usageLines)\n\nOPTIONS:\n\(optionRows)\n"
        text += "\n  Numbers may group digits with '_': 10_000 is 10000.\n"
        for section in sections { text += "\n\(section.title):\n\(section.body)\n" }
        return text
    }

    /// What `--version` prints.
    public var versionText: String { "\(command) \(Release.version)\n" }

    /// What bad usage prints on stderr before the program exits with 64.
    public func errorText(_ error: UsageError) -> String {
        "Error: \(error.message)\nUsage: \(usage)\n  See '\(command) --help' for more information.\n"
    }

    /// Two columns, indented by two, the second aligned.
    public static func table(_ rows: [(String, String)]) -> String {
        let width = (rows.map(\.0.count).max() ?? 0) + 2
        return rows.map { row in
            "  " + row.0 + String(repeating: " ", count: max(1, width - row.0.count)) + row.1
        }.joined(separator: "\n")
    }
}

/// The exit status for bad usage (sysexits.h EX_USAGE).
public let usageExitStatus: Int32 = 64
