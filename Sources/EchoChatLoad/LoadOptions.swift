import EchoChatOptions

/// What `echochat-load` runs: echo or chat traffic, or file transfers
/// (`upload`: uploads then downloads through a chat server's file sharing).
public enum LoadWorkload: String, CaseIterable, Sendable {
    case echo, chat, upload

    /// The workloads `chaos` can verify beside its hostile clients.
    public static let chaosModes: [LoadWorkload] = [.echo, .chat]
}

/// Everything one load run needs.
public struct LoadOptions: Sendable, Equatable {
    public var host = "127.0.0.1"
    public var port = 7007
    /// `--hosts`: several servers (a cluster); connection i goes to the
    /// (i mod n)-th. Empty: `host` and `port`.
    public var hosts: [Target] = []

    /// One server of `--hosts`.
    public struct Target: Sendable, Equatable {
        public var host: String
        public var port: Int
        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }
    }
    /// Worker threads; nil = the CPUs this process may run on.
    public var threads: Int?
    public var connections = 10
    /// Seconds of measured load (or of holding, with `hold`).
    public var duration = 5.0
    /// Messages per connection (echo) or per sender (chat), or files per
    /// client (upload), instead of a duration.
    public var messages: Int?
    /// Bytes per message (echo, chat) or per file (upload).
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
    /// Chat: the room every client joins after its welcome, so the run shares
    /// a server with other clients (`chaos`); nil = all stay in #lobby.
    /// No flag: 1-32 of A-Z a-z 0-9 _ -, without the `#`.
    public var room: String?

    public init() {}

    public var effectiveWarmup: Double { warmup ?? (messages == nil && !hold && mode == .echo ? 1 : 0) }
    /// Chat: lines per second per sender.
    public var effectiveRate: Double { rate ?? 100 }
    public var effectiveSenders: Int { min(connections, senders ?? min(connections, 10)) }
}

/// What the command line asks for.
public enum LoadCommand: Equatable, Sendable {
    case run(LoadOptions)
    case bench(BenchOptions)
    case compare(CompareOptions)
    case storm(StormOptions)
    case chaos(ChaosOptions)
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
    public var strategies = ["epoll", "reactors", "async", "thread", "pool"]
    /// Workload names (`BenchWorkload.all`); nil = all of them.
    public var workloads: [String]?
    /// Seconds per measured run; nil = 5 (1 with --quick).
    public var duration: Double?
    /// CPUs for the servers and for this client (taskset lists); nil = the default pinning.
    public var serverCPUs: CPUList?
    public var loadCPUs: CPUList?
    public init() {}

    public var effectiveRuns: Int { runs ?? (quick ? 1 : 3) }
    public var effectiveDuration: Double { duration ?? (quick ? 1 : 5) }
}

/// `echochat-load bench-loadgen`: this client against the C reference, same server.
public struct CompareOptions: Sendable, Equatable {
    /// The C reference load generator, built from the development kit's
    /// loadgen.c (not part of this repository); required.
    public var loadgen: String?
    public var server: String?
    public var runs = 3
    public var duration = 5.0
    public init() {}
}

/// Command-line handling for `echochat-load` and its `bench` and
/// `bench-loadgen` subcommands, on the shared `OptionParser`.
public enum LoadCommandLine {
    static let settings: [Option<LoadOptions>] = [
        Option("host", placeholder: "host", help: "Server address (127.0.0.1 or ::1 for local tests)",
                default: "127.0.0.1") { o, v, n throws(UsageError) in
            o.host = try Value.host(v, n)
        },
        Option("port", placeholder: "port", help: "Server port", default: "7007") { o, v, n throws(UsageError) in
            o.port = try Value.integer(v, n, in: 1...65535)
        },
        Option("hosts", placeholder: "h:p,h:p", help: "Several servers (a cluster): connections spread over them in turn; overrides --host and --port") {
            o, v, n throws(UsageError) in
            var hosts: [LoadOptions.Target] = []
            for part in v.split(separator: ",", omittingEmptySubsequences: false) {
                guard let endpoint = try Value.endpoint(String(part), n), endpoint.port > 0 else {
                    throw UsageError("invalid value '\(v)' for \(n): expected HOST:PORT,HOST:PORT,... with ports from 1 to 65535")
                }
                hosts.append(LoadOptions.Target(host: endpoint.host, port: endpoint.port))
            }
            o.hosts = hosts
        },
        Option("threads", placeholder: "n", help: "Worker threads, each with its own epoll loop",
                default: "CPUs this process may use") { o, v, n throws(UsageError) in
            o.threads = try Value.integer(v, n, in: 1...256)
        },
        Option("connections", short: "-c", placeholder: "n", help: "Connections (clients in chat mode)",
                default: "10") { o, v, n throws(UsageError) in
            o.connections = try Value.integer(v, n, in: 1...200_000)
        },
        Option("duration", short: "-d", placeholder: "seconds", help: "Measured time (hold time with --hold)",
                default: "5") { o, v, n throws(UsageError) in
            o.duration = try Value.seconds(v, n, positive: true, maximum: 86_400)
        },
        Option("messages", short: "-m", placeholder: "n",
                help: "Messages per connection (per sender in chat mode, files per client in upload mode) instead of a duration",
                default: nil) { o, v, n throws(UsageError) in
            o.messages = try Value.integer(v, n, in: 1...1_000_000_000)
        },
        Option("size", short: "-s", placeholder: "bytes",
                help: "Message size, including its LF (upload: file size, 1M unless given, 0 allowed; suffixes K, M, G)",
                default: "64") { o, v, n throws(UsageError) in
            o.size = try Value.size(v, n, minimum: 0)
        },
        Option("pipeline", short: "-p", placeholder: "n",
                help: "Messages in flight per connection (1 = ping-pong)", default: "1") { o, v, n throws(UsageError) in
            o.pipeline = try Value.integer(v, n, in: 1...4096)
        },
        Option("rate", short: "-r", placeholder: "msgs/s",
                help: "Open loop: messages per second per connection (per sender in chat), latency from the schedule",
                default: "closed loop; chat: 100") { o, v, n throws(UsageError) in
            o.rate = try Value.positive(v, n, maximum: 10_000_000)
        },
        Option("connect-rate", placeholder: "conns/s", help: "New connections per second",
                default: "as fast as possible") { o, v, n throws(UsageError) in
            o.connectRate = try Value.positive(v, n, maximum: 10_000_000)
        },
        Option("warmup", short: "-w", placeholder: "seconds", help: "Load before measuring starts",
                default: "1 for timed echo runs, else 0") { o, v, n throws(UsageError) in
            o.warmup = try Value.seconds(v, n, maximum: 86_400)
        },
        Option("mode", placeholder: "mode",
                help: "echo, chat, or upload (files through a chat server's --upload-dir)", default: "echo") { o, v, n throws(UsageError) in
            o.mode = try Value.choice(v, n, as: LoadWorkload.self)
        },
        Option("senders", placeholder: "n", help: "Chat: how many clients send",
                default: "10, or all if fewer") { o, v, n throws(UsageError) in
            o.senders = try Value.integer(v, n, in: 1...200_000)
        },
        Option("hold", placeholder: nil,
                help: "Open the connections, keep them idle for --duration, check each is still alive",
                default: nil) { o, _, _ throws(UsageError) in o.hold = true },
        Option("per-source", placeholder: "n",
                help: "Connections per 127.0.0.x source address before the next one is used",
                default: "from the ephemeral port range") { o, v, n throws(UsageError) in
            o.connectionsPerSource = try Value.integer(v, n, in: 1...65535)
        },
        Option("timeout", placeholder: "seconds",
                help: "Upper bound for connecting and for a --messages run (upload: for a transfer that makes no progress)",
                default: "60") { o, v, n throws(UsageError) in
            o.timeout = try Value.seconds(v, n, positive: true, maximum: 86_400)
        },
        Option("json", placeholder: "file", help: "Write the result as one JSON object (- for stdout)",
                default: nil) { o, v, _ throws(UsageError) in o.jsonPath = v },
        Option("quiet", short: "-q", placeholder: nil, help: "No live progress line on stderr (off anyway when stderr is not a terminal)",
                default: nil) { o, _, _ throws(UsageError) in o.quiet = true },
    ]

    static let inUsage: Set<String> = ["host", "port", "connections", "duration", "messages", "mode", "json"]

    public static let parser = OptionParser(
        command: "echochat-load",
        overview: """
            EchoChat load client: stress an echo or chat server, verify every
            byte that comes back, and report rates and latency percentiles.
            """,
        options: settings.map { $0.withUsage(inUsage.contains($0.name)) },
        sections: [
            (
                "EXIT STATUS",
                """
                  0 when every message came back intact; 1 when a byte mismatched, a
                  message was lost, a connection failed or closed early; 64 for bad
                  usage; 130 (SIGINT, Ctrl-C) or 143 (SIGTERM) when interrupted, after
                  printing (and with --json writing) what was measured until then.
                """
            )
        ],
        moreUsage: [
            "echochat-load bench [<options>]          (every strategy; see 'echochat-load bench --help')",
            "echochat-load bench-loadgen [<options>]  (against the C reference; see 'echochat-load bench-loadgen --help')",
            "echochat-load storm [<options>]          (a chat connect storm; see 'echochat-load storm --help')",
            "echochat-load chaos [<options>]          (hostile clients beside verifying ones; see 'echochat-load chaos --help')",
        ])

    // MARK: - Parsing

    /// Parses `arguments` (without the program name).
    public static func parse(_ arguments: [String]) throws(UsageError) -> LoadCommand {
        switch arguments.first {
        case "bench": return try parseBench(Array(arguments.dropFirst()))
        case "bench-loadgen": return try parseCompare(Array(arguments.dropFirst()))
        case "storm": return try parseStorm(Array(arguments.dropFirst()))
        case "chaos": return try parseChaos(Array(arguments.dropFirst()))
        default: break
        }
        var options = LoadOptions()
        switch try parser.parse(arguments, into: &options) {
        case .help: return .help(parser.helpText)
        case .version: return .version
        case .parsed(let given):
            if options.mode == .upload && !given.contains("size") { options.size = UploadRunner.defaultSize }
            try validate(options, given: given)
        }
        return .run(options)
    }

    public static var helpText: String { parser.helpText }

    /// What bad usage prints on stderr: the usage of the (sub)command that
    /// `arguments` names.
    public static func errorText(_ error: UsageError, arguments: [String]) -> String {
        switch arguments.first {
        case "bench": benchParser.errorText(error)
        case "bench-loadgen": compareParser.errorText(error)
        case "storm": stormParser.errorText(error)
        case "chaos": chaosParser.errorText(error)
        default: parser.errorText(error)
        }
    }

    static func validate(_ options: LoadOptions, given: Set<String>) throws(UsageError) {
        if options.messages != nil && given.contains("duration") {
            throw UsageError("--duration and --messages cannot be used together")
        }
        if options.hold {
            if options.mode != .echo { throw UsageError("--hold works with --mode echo only") }
            if options.messages != nil { throw UsageError("--hold takes --duration, not --messages") }
            if options.rate != nil { throw UsageError("--hold keeps connections idle; --rate does not apply") }
        }
        if options.mode == .upload {
            for name in ["pipeline", "rate", "senders", "warmup", "per-source", "connect-rate", "threads"] where given.contains(name) {
                throw UsageError("--\(name) does not apply to --mode upload")
            }
            if options.connections > UploadRunner.maximumClients {
                throw UsageError("--mode upload runs a thread per client: at most \(UploadRunner.maximumClients) connections")
            }
            if options.size > UploadRunner.maximumSize {
                throw UsageError("--mode upload needs --size of at most \(UploadRunner.maximumSize) bytes (the protocol's 18 digits)")
            }
            return
        }
        if options.size < 1 || options.size > 1 << 20 {
            throw UsageError("invalid value '\(options.size)' for --size: expected 1 to \(1 << 20) bytes in echo and chat mode")
        }
        if options.mode == .chat {
            if options.connections < 2 { throw UsageError("--mode chat needs at least 2 connections") }
            if options.size < ChatLine.minimumSize || options.size > 4096 {
                throw UsageError("--mode chat needs --size from \(ChatLine.minimumSize) to 4096 (each line carries its sender, sequence number and send time)")
            }
        }
    }
}

extension Option {
    /// The same option, named in the usage line or not.
    func withUsage(_ shown: Bool) -> Option {
        Option(
            name, short: short, placeholder: placeholder, help: help, default: defaultText, inUsage: shown,
            isRequired: isRequired, isSetting: isSetting, current: current, apply: apply)
    }
}
