/// Command-line handling for `echochat-load`, written by hand in
/// swift-argument-parser's conventions (like the server's): `USAGE:`/`OPTIONS:`
/// help with defaults, `Error: …` plus a usage hint on stderr, exit 64 for bad
/// usage, 0 for `--help` and `--version`.
public enum LoadWorkload: String, CaseIterable, Sendable {
    case echo, chat
}

/// Everything one load run needs.
public struct LoadOptions: Sendable, Equatable {
    public var host = "127.0.0.1"
    public var port = 7007
    /// Worker threads; nil = the CPUs this process may run on.
    public var threads: Int?
    public var connections = 10
    /// Seconds of measured load (or of holding, with `hold`).
    public var duration = 5.0
    /// Messages per connection (echo) or per sender (chat) instead of a duration.
    public var messages: Int?
    public var size = 64
    public var pipeline = 1
    /// Messages per second per connection (echo, open loop) or per sender (chat).
    public var rate: Double?
    /// New connections per second; nil = as fast as possible.
    public var connectRate: Double?
    /// Seconds of load before measuring starts; nil = 1 s for timed echo runs, else 0.
    public var warmup: Double?
    public var mode: LoadWorkload = .echo
    /// Chat: how many of the connections send (the first ones).
    public var senders: Int?
    public var hold = false
    public var jsonPath: String?
    public var quiet = false
    /// Connections per loopback source address before the next 127.0.0.x is
    /// used; nil = from the ephemeral port range.
    public var connectionsPerSource: Int?
    /// Upper bound in seconds for a `--messages` run, and for connecting.
    public var timeout = 60.0

    public init() {}

    public var effectiveWarmup: Double { warmup ?? (messages == nil && !hold && mode == .echo ? 1 : 0) }
    /// Chat: lines per second per sender.
    public var effectiveRate: Double { rate ?? 100 }
    public var effectiveSenders: Int { min(connections, senders ?? min(connections, 10)) }
}

/// A bad flag or value. The message is the text after `Error: `.
public struct LoadUsageError: Error, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// What the command line asks for.
public enum LoadCommand: Equatable, Sendable {
    case run(LoadOptions)
    case bench(BenchOptions)
    case compare(CompareOptions)
    case storm(StormOptions)
    case help(String)
    case version
}

/// `echochat-load bench`: every strategy against a fixed set of workloads.
public struct BenchOptions: Sendable, Equatable {
    /// The server binary; nil = `echochat-server` beside this program.
    public var server: String?
    public var outputDirectory = ".bench"
    public var quick = false
    /// Repetitions of each workload; the table shows the median.
    public var runs: Int?
    public var strategies = ["epoll", "thread", "pool"]
    /// Workload names (`BenchWorkload.all`); nil = all of them.
    public var workloads: [String]?
    /// Seconds per measured run; nil = 5 (1 with --quick).
    public var duration: Double?
    public init() {}

    public var effectiveRuns: Int { runs ?? (quick ? 1 : 3) }
    public var effectiveDuration: Double { duration ?? (quick ? 1 : 5) }
}

/// `echochat-load bench-loadgen`: this client against the C reference, same server.
public struct CompareOptions: Sendable, Equatable {
    public var loadgen = "/tmp/loadgen"
    public var server: String?
    public var runs = 3
    public var duration = 5.0
    public init() {}
}

public enum LoadCommandLine {
    public static let version = "0.1.0"

    static let settings: [OptionSetting<LoadOptions>] = [
        OptionSetting(name: "host", short: nil, placeholder: "host", help: "Server address (127.0.0.1 or ::1 for local tests)",
                defaultText: "127.0.0.1") { o, v, n throws(LoadUsageError) in
            guard !v.isEmpty, !v.contains(" ") else { throw LoadUsageError("invalid value '\(v)' for \(n): expected an address") }
            o.host = v
        },
        OptionSetting(name: "port", short: nil, placeholder: "port", help: "Server port", defaultText: "7007") { o, v, n throws(LoadUsageError) in
            o.port = try Parse.integer(v, n, in: 1...65535)
        },
        OptionSetting(name: "threads", short: nil, placeholder: "n", help: "Worker threads, each with its own epoll loop",
                defaultText: "CPUs this process may use") { o, v, n throws(LoadUsageError) in
            o.threads = try Parse.integer(v, n, in: 1...256)
        },
        OptionSetting(name: "connections", short: "-c", placeholder: "n", help: "Connections (clients in chat mode)",
                defaultText: "10") { o, v, n throws(LoadUsageError) in
            o.connections = try Parse.integer(v, n, in: 1...200_000)
        },
        OptionSetting(name: "duration", short: "-d", placeholder: "seconds", help: "Measured time (hold time with --hold)",
                defaultText: "5") { o, v, n throws(LoadUsageError) in
            o.duration = try Parse.seconds(v, n, positive: true)
        },
        OptionSetting(name: "messages", short: "-m", placeholder: "n",
                help: "Messages per connection (per sender in chat mode) instead of a duration",
                defaultText: nil) { o, v, n throws(LoadUsageError) in
            o.messages = try Parse.integer(v, n, in: 1...1_000_000_000)
        },
        OptionSetting(name: "size", short: "-s", placeholder: "bytes", help: "Message size, including its LF",
                defaultText: "64") { o, v, n throws(LoadUsageError) in
            o.size = try Parse.integer(v, n, in: 1...(1 << 20))
        },
        OptionSetting(name: "pipeline", short: "-p", placeholder: "n",
                help: "Messages in flight per connection (1 = ping-pong)", defaultText: "1") { o, v, n throws(LoadUsageError) in
            o.pipeline = try Parse.integer(v, n, in: 1...4096)
        },
        OptionSetting(name: "rate", short: "-r", placeholder: "msgs/s",
                help: "Open loop: messages per second per connection (per sender in chat), latency from the schedule",
                defaultText: "closed loop; chat: 100") { o, v, n throws(LoadUsageError) in
            o.rate = try Parse.positive(v, n, max: 10_000_000)
        },
        OptionSetting(name: "connect-rate", short: nil, placeholder: "conns/s", help: "New connections per second",
                defaultText: "as fast as possible") { o, v, n throws(LoadUsageError) in
            o.connectRate = try Parse.positive(v, n, max: 10_000_000)
        },
        OptionSetting(name: "warmup", short: "-w", placeholder: "seconds", help: "Load before measuring starts",
                defaultText: "1 for timed echo runs, else 0") { o, v, n throws(LoadUsageError) in
            o.warmup = try Parse.seconds(v, n, positive: false)
        },
        OptionSetting(name: "mode", short: nil, placeholder: "mode", help: "echo or chat", defaultText: "echo") { o, v, n throws(LoadUsageError) in
            guard let mode = LoadWorkload(rawValue: v) else {
                throw LoadUsageError("invalid value '\(v)' for \(n): expected one of echo, chat")
            }
            o.mode = mode
        },
        OptionSetting(name: "senders", short: nil, placeholder: "n", help: "Chat: how many clients send",
                defaultText: "10, or all if fewer") { o, v, n throws(LoadUsageError) in
            o.senders = try Parse.integer(v, n, in: 1...200_000)
        },
        OptionSetting(name: "hold", short: nil, placeholder: nil,
                help: "Open the connections, keep them idle for --duration, check each is still alive",
                defaultText: nil) { o, _, _ throws(LoadUsageError) in o.hold = true },
        OptionSetting(name: "per-source", short: nil, placeholder: "n",
                help: "Connections per 127.0.0.x source address before the next one is used",
                defaultText: "from the ephemeral port range") { o, v, n throws(LoadUsageError) in
            o.connectionsPerSource = try Parse.integer(v, n, in: 1...65535)
        },
        OptionSetting(name: "timeout", short: nil, placeholder: "seconds",
                help: "Upper bound for connecting and for a --messages run", defaultText: "60") { o, v, n throws(LoadUsageError) in
            o.timeout = try Parse.seconds(v, n, positive: true)
        },
        OptionSetting(name: "json", short: nil, placeholder: "file", help: "Write the result as one JSON object (- for stdout)",
                defaultText: nil) { o, v, _ throws(LoadUsageError) in o.jsonPath = v },
        OptionSetting(name: "quiet", short: "-q", placeholder: nil, help: "No live progress line on stderr (off anyway when stderr is not a terminal)",
                defaultText: nil) { o, _, _ throws(LoadUsageError) in o.quiet = true },
    ]

    // MARK: - Parsing

    /// Parses `arguments` (without the program name).
    public static func parse(_ arguments: [String]) throws(LoadUsageError) -> LoadCommand {
        if let first = arguments.first {
            if first == "bench" { return try parseBench(Array(arguments.dropFirst())) }
            if first == "bench-loadgen" { return try parseCompare(Array(arguments.dropFirst())) }
            if first == "storm" { return try parseStorm(Array(arguments.dropFirst())) }
        }
        var options = LoadOptions()
        switch try parseFlags(arguments, settings: settings, into: &options) {
        case .help: return .help(helpText)
        case .version: return .version
        case .parsed(let given): try validate(options, given: given)
        }
        return .run(options)
    }

    static func validate(_ options: LoadOptions, given: Set<String>) throws(LoadUsageError) {
        if options.messages != nil && given.contains("duration") {
            throw LoadUsageError("--duration and --messages cannot be used together")
        }
        if options.hold {
            if options.mode == .chat { throw LoadUsageError("--hold works with --mode echo only") }
            if options.messages != nil { throw LoadUsageError("--hold takes --duration, not --messages") }
            if options.rate != nil { throw LoadUsageError("--hold keeps connections idle; --rate does not apply") }
        }
        if options.mode == .chat {
            if options.connections < 2 { throw LoadUsageError("--mode chat needs at least 2 connections") }
            if options.size < ChatLine.minimumSize || options.size > 4096 {
                throw LoadUsageError("--mode chat needs --size from \(ChatLine.minimumSize) to 4096 (each line carries its sender, sequence number and send time)")
            }
        }
    }

    enum FlagsOutcome { case help, version, parsed(given: Set<String>) }

    /// Applies `--name value`, `--name=value`, `-x value` and value-less flags
    /// in order; a later flag wins.
    static func parseFlags<O>(
        _ arguments: [String], settings: [OptionSetting<O>], into options: inout O
    ) throws(LoadUsageError) -> FlagsOutcome {
        var given: Set<String> = []
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            switch argument {
            case "-h", "--help": return .help
            case "--version": return .version
            default: break
            }
            var name: String
            var value: String?
            if argument.hasPrefix("--"), argument.count > 2 {
                name = String(argument.dropFirst(2))
                if let equals = name.firstIndex(of: "=") {
                    value = String(name[name.index(after: equals)...])
                    name = String(name[..<equals])
                }
            } else if let setting = settings.first(where: { $0.short == argument }) {
                name = setting.name
            } else if argument.hasPrefix("-") && argument.count > 1 {
                throw LoadUsageError("unknown option '\(argument)'")
            } else {
                throw LoadUsageError("unexpected argument '\(argument)'")
            }
            guard let setting = settings.first(where: { $0.name == name }) else {
                throw LoadUsageError("unknown option '--\(name)'")
            }
            given.insert(name)
            if setting.placeholder == nil {
                if value != nil { throw LoadUsageError("'--\(name)' takes no value") }
                try setting.apply(&options, "", "--\(name)")
                continue
            }
            if value == nil {
                guard index < arguments.count else { throw LoadUsageError("missing value for '--\(name)'") }
                value = arguments[index]
                index += 1
            }
            try setting.apply(&options, value!, "--\(name)")
        }
        return .parsed(given: given)
    }

    // MARK: - Help

    public static let usageLine =
        "echochat-load [--host <host>] [--port <port>] [--threads <n>] [--connections <n>] [--duration <seconds> | --messages <n>] [--size <bytes>] [--pipeline <n>] [--rate <msgs/s>] [--connect-rate <conns/s>] [--warmup <seconds>] [--mode echo|chat] [--hold] [--json <file>] [--quiet]"

    static func renderOptions<O>(_ settings: [OptionSetting<O>]) -> String {
        var rows: [(String, String)] = settings.map { setting in
            var flag = "--\(setting.name)"
            if let short = setting.short { flag = "\(short), \(flag)" }
            if let placeholder = setting.placeholder { flag += " <\(placeholder)>" }
            let help = setting.defaultText.map { "\(setting.help) (default: \($0))" } ?? setting.help
            return (flag, help)
        }
        rows.append(("--version", "Show the version."))
        rows.append(("-h, --help", "Show help information."))
        let width = rows.map(\.0.count).max()! + 2
        return rows.map { row in
            "  " + row.0 + String(repeating: " ", count: max(1, width - row.0.count)) + row.1
        }.joined(separator: "\n")
    }

    public static var helpText: String {
        """
        OVERVIEW: EchoChat load client: stress an echo or chat server, verify every
        byte that comes back, and report rates and latency percentiles.

        USAGE: \(usageLine)
               echochat-load bench [<options>]          (every strategy, see 'echochat-load bench --help')
               echochat-load bench-loadgen [<options>]  (against ../shared/bench/loadgen)
               echochat-load storm [<options>]          (connect storm, see 'echochat-load storm --help')

        OPTIONS:
        \(renderOptions(settings))

        Exit status: 0 when every message came back intact, 1 when a byte
        mismatched, a message was lost, a connection failed or closed early,
        64 for bad usage.

        """
    }

    /// What bad usage prints on stderr before exiting with 64.
    public static func errorText(_ error: LoadUsageError, command: String = "echochat-load") -> String {
        "Error: \(error.message)\nUsage: \(usageLine)\n  See '\(command) --help' for more information.\n"
    }
}

/// One option: its long name (and short form), the placeholder and help
/// shown by `--help`, and how a value is applied. No placeholder: a flag.
struct OptionSetting<O>: Sendable {
    let name: String
    let short: String?
    let placeholder: String?
    let help: String
    let defaultText: String?
    let apply: @Sendable (inout O, String, String) throws(LoadUsageError) -> Void
}

/// Parsers for values; each error says what was expected.
enum Parse {
    static func integer(_ text: String, _ name: String, in range: ClosedRange<Int>) throws(LoadUsageError) -> Int {
        let cleaned = text.replacingUnderscores()
        guard let value = Int(cleaned), range.contains(value) else {
            throw LoadUsageError("invalid value '\(text)' for \(name): expected an integer from \(range.lowerBound) to \(range.upperBound)")
        }
        return value
    }

    static func seconds(_ text: String, _ name: String, positive: Bool) throws(LoadUsageError) -> Double {
        guard let value = Double(text), value.isFinite, positive ? value > 0 : value >= 0, value <= 86_400 else {
            throw LoadUsageError("invalid value '\(text)' for \(name): expected a number of seconds (\(positive ? "more than 0" : "0 or more"), at most 86400)")
        }
        return value
    }

    static func positive(_ text: String, _ name: String, max: Double) throws(LoadUsageError) -> Double {
        guard let value = Double(text.replacingUnderscores()), value.isFinite, value > 0, value <= max else {
            throw LoadUsageError("invalid value '\(text)' for \(name): expected a number above 0")
        }
        return value
    }
}

extension String {
    func replacingUnderscores() -> String { String(filter { $0 != "_" }) }
}
