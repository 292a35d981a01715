import EchoChatCore

/// Command-line and config-file handling for `echochat-server`, written by
/// hand in swift-argument-parser's conventions: `USAGE:`/`OPTIONS:` help with
/// defaults, `Error: …` plus a usage hint on stderr, exit 64 for bad usage.
///
/// Precedence: defaults < config file < flags.
public enum ServerOptions {
    public static let version = "0.1.0"

    /// What the command line asks for.
    public enum Command: Equatable {
        case run(ServerConfiguration)
        /// `--check-config`: validate, print the effective settings, exit 0.
        case checkConfig(ServerConfiguration)
        case help
        case version
    }

    /// One setting: its flag and config key (`--max-line` / `max-line`), the
    /// placeholder and help shown by `--help`, and how a value is applied.
    struct Setting: Sendable {
        let name: String
        let placeholder: String
        let help: String
        /// The setting's value in `config`, as a config file would spell it.
        let value: @Sendable (ServerConfiguration) -> String
        /// A switch takes no value on the command line (`--daemon`); in a
        /// config file it takes yes/no.
        var isSwitch = false
        /// Applies a value; the third argument names the setting in errors
        /// (`--port` for a flag, `'port'` for a config key).
        let apply: @Sendable (inout ServerConfiguration, String, String) throws(UsageError) -> Void
    }

    static let table: [Setting] = [
        Setting(name: "host", placeholder: "host",
                help: "Address to bind; 0.0.0.0 or :: for all interfaces",
                value: { $0.host }) { config, text, name throws(UsageError) in config.host = try ValueParser.host(text, name) },
        Setting(name: "port", placeholder: "port", help: "TCP port; 0 picks a free one (logged at start)",
                value: { String($0.port) }) { config, text, name throws(UsageError) in
            config.port = try ValueParser.integer(text, name, in: 0...65535)
        },
        Setting(name: "mode", placeholder: "mode", help: "echo or chat",
                value: { $0.mode.rawValue }) { config, text, name throws(UsageError) in
            config.mode = try ValueParser.choice(text, name, as: ServerMode.self)
        },
        Setting(name: "strategy", placeholder: "strategy",
                help: "Concurrency strategy: " + Strategy.allCases.map(\.rawValue).joined(separator: ", "),
                value: { $0.strategy.rawValue }) { config, text, name throws(UsageError) in
            config.strategy = try ValueParser.choice(text, name, as: Strategy.self)
        },
        Setting(name: "max-clients", placeholder: "n", help: "Clients connected at once; more are refused",
                value: { String($0.maxClients) }) { config, text, name throws(UsageError) in
            config.maxClients = try ValueParser.integer(text, name, in: 1...1_000_000)
        },
        Setting(name: "max-line", placeholder: "bytes", help: "Longest chat line, without its line end",
                value: { String($0.maxLine) }) { config, text, name throws(UsageError) in
            config.maxLine = try ValueParser.size(text, name, minimum: 1)
        },
        Setting(name: "max-output", placeholder: "bytes",
                help: "Output queued per client: echo stops reading, chat drops a slow consumer",
                value: { String($0.maxOutput) }) { config, text, name throws(UsageError) in
            config.maxOutput = try ValueParser.size(text, name, minimum: 1)
        },
        Setting(name: "idle-timeout", placeholder: "seconds", help: "Close clients silent this long; 0 = off",
                value: { format($0.idleTimeout) }) { config, text, name throws(UsageError) in
            config.idleTimeout = try ValueParser.seconds(text, name)
        },
        Setting(name: "line-timeout", placeholder: "seconds",
                help: "Chat: close clients that leave a line unfinished this long; 0 = off",
                value: { format($0.lineTimeout) }) { config, text, name throws(UsageError) in
            config.lineTimeout = try ValueParser.seconds(text, name)
        },
        Setting(name: "shutdown-timeout", placeholder: "seconds",
                help: "On SIGTERM/SIGINT, time allowed to deliver pending output",
                value: { format($0.shutdownTimeout) }) { config, text, name throws(UsageError) in
            config.shutdownTimeout = try ValueParser.seconds(text, name)
        },
        Setting(name: "close-timeout", placeholder: "seconds",
                help: "Time a finished session has to take its last output before it is closed anyway",
                value: { format($0.closeTimeout) }) { config, text, name throws(UsageError) in
            config.closeTimeout = try ValueParser.seconds(text, name)
        },
        Setting(name: "workers", placeholder: "n", help: "Pool strategy: worker threads (auto = CPUs available, at least 2)",
                value: { $0.workers.map(String.init) ?? "auto" }) { config, text, name throws(UsageError) in
            config.workers = text == "auto" ? nil : try ValueParser.integer(text, name, in: 1...1024)
        },
        Setting(name: "thread-stack", placeholder: "bytes", help: "Thread strategy: stack size per client thread",
                value: { "\($0.threadStack / 1024)K" }) { config, text, name throws(UsageError) in
            config.threadStack = try ValueParser.size(text, name, minimum: 64 * 1024)
        },
        Setting(name: "daemon", placeholder: "", help: "Detach and run in the background; exits once listening",
                value: { $0.daemon ? "yes" : "no" }, isSwitch: true) { config, text, name throws(UsageError) in
            config.daemon = try ValueParser.boolean(text, name)
        },
        Setting(name: "pidfile", placeholder: "file", help: "Write the pid here once listening; a second instance refuses it",
                value: { $0.pidFile ?? "" }) { config, text, name throws(UsageError) in
            config.pidFile = try ValueParser.path(text, name)
        },
        Setting(name: "log-file", placeholder: "file", help: "Append logs here instead of stderr; SIGHUP reopens it",
                value: { $0.logFile ?? "" }) { config, text, name throws(UsageError) in
            config.logFile = try ValueParser.path(text, name)
        },
        Setting(name: "log-level", placeholder: "level", help: "debug, info, warn or error",
                value: { $0.logLevel.rawValue }) { config, text, name throws(UsageError) in
            config.logLevel = try ValueParser.choice(text, name, as: LogLevel.self)
        },
    ]

    /// Every config key (the long flags without `--`), for docs and tests.
    public static var settingNames: [String] { table.map(\.name) }

    static func format(_ seconds: Double) -> String {
        seconds == seconds.rounded() ? String(Int(seconds)) : String(seconds)
    }

    // MARK: - Parsing

    /// Parses `arguments` (without the program name). `readFile` loads
    /// `--config FILE`; it is a parameter so tests need no files.
    public static func parse(
        _ arguments: [String], readFile: (String) throws -> String
    ) throws(UsageError) -> Command {
        var flags: [(Setting, String)] = []
        var configFile: String?
        var checkOnly = false
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            switch argument {
            case "-h", "--help": return .help
            case "--version": return .version
            case "--check-config":
                checkOnly = true
                continue
            default: break
            }
            guard argument.hasPrefix("--"), argument.count > 2 else {
                if argument.hasPrefix("-") { throw UsageError("unknown option '\(argument)'") }
                throw UsageError("unexpected argument '\(argument)'")
            }
            var name = String(argument.dropFirst(2))
            var value: String?
            if let equals = name.firstIndex(of: "=") {
                value = String(name[name.index(after: equals)...])
                name = String(name[..<equals])
            }
            guard name == "config" || table.contains(where: { $0.name == name }) else {
                throw UsageError("unknown option '--\(name)'")
            }
            if value == nil, table.first(where: { $0.name == name })?.isSwitch == true {
                value = "yes"
            }
            if value == nil {
                guard index < arguments.count else { throw UsageError("missing value for '--\(name)'") }
                value = arguments[index]
                index += 1
            }
            if name == "config" {
                configFile = value
            } else if let setting = table.first(where: { $0.name == name }) {
                flags.append((setting, value!))
            }
        }

        var config = ServerConfiguration()
        if let configFile {
            let text: String
            do { text = try readFile(configFile) } catch {
                throw UsageError("cannot read config file '\(configFile)': \(error)")
            }
            try applyConfigFile(text, path: configFile, to: &config)
            config.configFile = configFile
        }
        for (setting, value) in flags { try setting.apply(&config, value, "--\(setting.name)") }
        return checkOnly ? .checkConfig(config) : .run(config)
    }

    /// Applies `key = value` lines; `#` starts a comment; blank lines are fine.
    /// Errors name the file and line: `echochat.conf:12: unknown key 'foo'`.
    public static func applyConfigFile(
        _ text: String, path: String, to config: inout ServerConfiguration
    ) throws(UsageError) {
        for (number, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var line = Substring(rawLine)
            if let hash = line.firstIndex(of: "#") { line = line[..<hash] }
            let trimmed = line.trimmingSpaces()
            if trimmed.isEmpty { continue }
            let location = "\(path):\(number + 1)"
            guard let equals = trimmed.firstIndex(of: "=") else {
                throw UsageError("\(location): expected 'key = value', got '\(trimmed)'")
            }
            let key = String(trimmed[..<equals].trimmingSpaces())
            let value = String(trimmed[trimmed.index(after: equals)...].trimmingSpaces())
            guard let setting = table.first(where: { $0.name == key }) else {
                throw UsageError("\(location): unknown key '\(key)'")
            }
            guard !value.isEmpty else { throw UsageError("\(location): missing value for '\(key)'") }
            do {
                try setting.apply(&config, value, "'\(key)'")
            } catch {
                throw UsageError("\(location): \(error.message)")
            }
        }
    }

    // MARK: - Help

    public static let usageLine =
        "echochat-server [--host <host>] [--port <port>] [--mode <mode>] [--strategy <strategy>] [--config <file>] [--daemon] [<options>]"

    public static var helpText: String {
        let defaults = ServerConfiguration()
        var rows: [(String, String)] = table.map { setting in
            if setting.isSwitch { return ("--\(setting.name)", setting.help) }
            let shown = setting.value(defaults)
            return ("--\(setting.name) <\(setting.placeholder)>", setting.help + (shown.isEmpty ? "" : " (default: \(shown))"))
        }
        rows.append(("--config <file>", "Read settings from a config file (key = value); flags override it"))
        rows.append(("--check-config", "Validate the flags and config file, print the effective settings, exit"))
        rows.append(("--version", "Show the version."))
        rows.append(("-h, --help", "Show help information."))
        let width = rows.map(\.0.count).max()! + 2
        let options = rows.map { "  " + $0.0.padding(to: width) + $0.1 }.joined(separator: "\n")
        return """
            OVERVIEW: EchoChat server: a multi-client TCP echo and chat server.

            USAGE: \(usageLine)

            OPTIONS:
            \(options)

            """
    }

    /// The settings in config-file syntax, one `key = value` per line (what
    /// `--check-config` prints); unset paths are left out.
    public static func render(_ config: ServerConfiguration) -> String {
        var lines: [String] = []
        if let file = config.configFile { lines.append("# effective settings: defaults < \(file) < flags") }
        for setting in table {
            let value = setting.value(config)
            if !value.isEmpty { lines.append("\(setting.name) = \(value)") }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// What bad usage prints on stderr before exiting with 64.
    public static func errorText(_ error: UsageError) -> String {
        "Error: \(error.message)\nUsage: \(usageLine)\n  See 'echochat-server --help' for more information.\n"
    }
}

extension StringProtocol {
    func trimmingSpaces() -> SubSequence {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\r" }
        guard let start = firstIndex(where: { !isSpace($0) }) else { return self[endIndex...] }
        let end = lastIndex(where: { !isSpace($0) })!
        return self[start...end]
    }

    func padding(to width: Int) -> String {
        String(self) + String(repeating: " ", count: Swift.max(1, width - count))
    }
}
