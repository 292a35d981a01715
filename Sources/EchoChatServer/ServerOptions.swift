import EchoChatCore
import EchoChatOptions

/// Command-line, environment and config-file handling for `echochat-server`,
/// on the shared `OptionParser`: one table of settings, each a flag
/// (`--max-line`), a config-file key (`max-line`) and an environment variable
/// (`ECHOCHAT_MAX_LINE`).
///
/// Precedence: defaults < config file < environment < flags. A SIGHUP reload
/// builds the settings again the same way: defaults < the file as it is now <
/// the same environment < the same flags.
public enum ServerOptions {
    /// What the command line asks for.
    public enum Command: Equatable {
        case run(ServerConfiguration)
        /// `--check-config`: validate, print the effective settings and where
        /// each came from, exit 0.
        case checkConfig(LayeredSettings<ServerConfiguration>)
        case help
        case version
    }

    /// Environment variables are this prefix and the key upper-cased, `-` → `_`.
    public static let environmentPrefix = "ECHOCHAT_"

    /// One setting: its flag and config key, the placeholder and help shown by
    /// `--help`, its value as a config file spells it (for `--check-config`
    /// and the default shown in help), and how a value is applied. A switch
    /// (no placeholder) takes no value as a flag and yes/no elsewhere.
    static func setting(
        _ name: String, placeholder: String?, help: String, value: @escaping @Sendable (ServerConfiguration) -> String,
        apply: @escaping @Sendable (inout ServerConfiguration, String, String) throws(UsageError) -> Void
    ) -> Option<ServerConfiguration> {
        let shown = value(ServerConfiguration())
        return Option(
            name, placeholder: placeholder, help: help,
            default: placeholder == nil || shown.isEmpty ? nil : shown,
            inUsage: ["host", "port", "mode", "strategy", "daemon"].contains(name), isSetting: true, current: value,
            apply: apply)
    }

    /// A setting in seconds (decimals allowed, 0 = off where the help says so).
    static func seconds(
        _ name: String, help: String, _ field: WritableKeyPath<ServerConfiguration, Double> & Sendable
    ) -> Option<ServerConfiguration> {
        setting(name, placeholder: "seconds", help: help, value: { format($0[keyPath: field]) }) {
            config, text, name throws(UsageError) in config[keyPath: field] = try Value.seconds(text, name)
        }
    }

    static let settings: [Option<ServerConfiguration>] = [
        setting("host", placeholder: "host",
                help: "Address to bind; 0.0.0.0 or :: for all interfaces",
                value: { $0.host }) { config, text, name throws(UsageError) in config.host = try Value.host(text, name) },
        setting("port", placeholder: "port", help: "TCP port; 0 picks a free one (logged at start)",
                value: { String($0.port) }) { config, text, name throws(UsageError) in
            config.port = try Value.integer(text, name, in: 0...65535)
        },
        setting("mode", placeholder: "mode", help: "echo or chat",
                value: { $0.mode.rawValue }) { config, text, name throws(UsageError) in
            config.mode = try Value.choice(text, name, as: ServerMode.self)
        },
        setting("strategy", placeholder: "strategy",
                help: "Concurrency strategy: " + Strategy.allCases.map(\.rawValue).joined(separator: ", "),
                value: { $0.strategy.rawValue }) { config, text, name throws(UsageError) in
            config.strategy = try Value.choice(text, name, as: Strategy.self)
        },
        setting("max-clients", placeholder: "n", help: "Clients connected at once; more are refused",
                value: { String($0.maxClients) }) { config, text, name throws(UsageError) in
            config.maxClients = try Value.integer(text, name, in: 1...1_000_000)
        },
        setting("max-per-address", placeholder: "n",
                help: "Connections one client address may hold at once; more are refused; 0 = no limit",
                value: { String($0.maxPerAddress) }) { config, text, name throws(UsageError) in
            config.maxPerAddress = try Value.integer(text, name, in: 0...1_000_000)
        },
        setting("max-line", placeholder: "bytes", help: "Longest chat line, without its line end",
                value: { String($0.maxLine) }) { config, text, name throws(UsageError) in
            config.maxLine = try Value.size(text, name, minimum: 1)
        },
        setting("max-output", placeholder: "bytes",
                help: "Output queued per client: echo stops reading, chat drops a slow consumer",
                value: { String($0.maxOutput) }) { config, text, name throws(UsageError) in
            config.maxOutput = try Value.size(text, name, minimum: 1)
        },
        seconds("idle-timeout", help: "Close clients silent this long; 0 = off", \.idleTimeout),
        seconds("line-timeout", help: "Chat: close clients that leave a line unfinished this long; 0 = off", \.lineTimeout),
        seconds("send-timeout", help: "Close connections whose waiting output none of is taken this long; 0 = off", \.sendTimeout),
        setting("rate-limit", placeholder: "lines", help: "Chat: lines per second per client, read more slowly beyond; 0 = off",
                value: { String($0.rateLimit) }) { config, text, name throws(UsageError) in
            config.rateLimit = try Value.integer(text, name, in: 0...1_000_000)
        },
        setting("rate-burst", placeholder: "lines", help: "Chat: lines a client may send at once before rate-limit applies; 0 = 2 x rate-limit",
                value: { String($0.rateBurst) }) { config, text, name throws(UsageError) in
            config.rateBurst = try Value.integer(text, name, in: 0...1_000_000)
        },
        seconds("shutdown-timeout", help: "On SIGTERM/SIGINT, time allowed to deliver pending output", \.shutdownTimeout),
        seconds("close-timeout", help: "Time a finished session has to take its last output before it is closed anyway", \.closeTimeout),
        setting("upload-dir", placeholder: "dir",
                help: "Chat: share files (/upload, /files, /download), stored in this directory (created if missing); off = no sharing",
                value: { $0.uploadDir ?? "off" }) { config, text, name throws(UsageError) in
            config.uploadDir = text == "off" ? nil : try Value.path(text, name)
        },
        setting("max-upload", placeholder: "bytes", help: "Chat: the largest file one /upload may send",
                value: { String($0.maxUpload) }) { config, text, name throws(UsageError) in
            config.maxUpload = try Value.size(text, name, minimum: 0)
        },
        setting("upload-quota", placeholder: "bytes", help: "Chat: the total size of all stored files",
                value: { String($0.uploadQuota) }) { config, text, name throws(UsageError) in
            config.uploadQuota = try Value.size(text, name, minimum: 0)
        },
        setting("cluster", placeholder: "url",
                help: "Chat: join the servers using this Redis (redis://HOST:PORT[/DB]) into one chat; off = standalone",
                value: { $0.cluster?.spelled ?? "off" }) { config, text, name throws(UsageError) in
            config.cluster = text == "off" ? nil : try RedisURL.parse(text, name)
        },
        setting("cluster-timeout", placeholder: "seconds",
                help: "Cluster: a server silent this long is lost (its clients leave); also Redis's time to answer",
                value: { format($0.clusterTimeout) }) { config, text, name throws(UsageError) in
            config.clusterTimeout = try Value.seconds(text, name, positive: true, maximum: 3600)
        },
        setting("node-id", placeholder: "id", help: "Cluster: this server's name (auto = hostname:port)",
                value: { $0.nodeID ?? "auto" }) { config, text, name throws(UsageError) in
            config.nodeID = text == "auto" ? nil : try NodeID.parse(text, name)
        },
        setting("workers", placeholder: "n", help: "Pool strategy: worker threads (auto = CPUs available)",
                value: { $0.workers.map(String.init) ?? "auto" }) { config, text, name throws(UsageError) in
            config.workers = text == "auto" ? nil : try Value.integer(text, name, in: 1...1024)
        },
        setting("loops", placeholder: "n", help: "Reactors strategy: event loops, one thread each (auto = CPUs available)",
                value: { $0.loops.map(String.init) ?? "auto" }) { config, text, name throws(UsageError) in
            config.loops = text == "auto" ? nil : try Value.integer(text, name, in: 1...1024)
        },
        setting("thread-stack", placeholder: "bytes", help: "Thread strategy: stack size per client thread",
                value: { "\($0.threadStack / 1024)K" }) { config, text, name throws(UsageError) in
            config.threadStack = try Value.size(text, name, minimum: 64 * 1024)
        },
        setting("daemon", placeholder: nil, help: "Detach and run in the background; exits once listening",
                value: { $0.daemon ? "yes" : "no" }) { config, text, name throws(UsageError) in
            config.daemon = try Value.boolean(text, name)
        },
        setting("pidfile", placeholder: "file", help: "Write the pid here once listening; a second instance refuses it",
                value: { $0.pidFile ?? "" }) { config, text, name throws(UsageError) in
            config.pidFile = try Value.path(text, name)
        },
        setting("log-file", placeholder: "file", help: "Append logs here instead of stderr; SIGHUP reopens it",
                value: { $0.logFile ?? "" }) { config, text, name throws(UsageError) in
            config.logFile = try Value.path(text, name)
        },
        setting("log-level", placeholder: "level", help: "debug, info, warn or error",
                value: { $0.logLevel.rawValue }) { config, text, name throws(UsageError) in
            config.logLevel = try Value.choice(text, name, as: LogLevel.self)
        },
        setting("metrics", placeholder: "host:port",
                help: "Serve Prometheus metrics on GET /metrics at this address (port 0 picks one); off = none",
                value: { $0.metrics?.description ?? "off" }) { config, text, name throws(UsageError) in
            config.metrics = text == "off" ? nil : try Value.endpoint(text, name).map { Endpoint(host: $0.host, port: $0.port) }
        },
    ]

    /// `--config` and `--check-config`: command line only, not settings.
    static let commandLineOnly: [Option<ServerConfiguration>] = [
        Option(
            "config", placeholder: "file",
            help: "Read settings from a config file (key = value); the environment and flags override it"
        ) { _, _, _ throws(UsageError) in },
        Option(
            "check-config", placeholder: nil,
            help: "Validate flags, environment and config file; print each setting and its source; exit",
            inUsage: false) { _, _, _ throws(UsageError) in },
    ]

    public static let parser = OptionParser(
        command: "echochat-server",
        overview: "EchoChat server: a multi-client TCP echo and chat server.",
        options: settings + commandLineOnly,
        sections: [
            (
                "ENVIRONMENT",
                """
                  Every setting can also be given as ECHOCHAT_<KEY>: the long option name
                  upper-cased, '-' as '_' (ECHOCHAT_PORT=7008, ECHOCHAT_MAX_CLIENTS=500).
                  Precedence: defaults < config file < environment < flags. SIGHUP re-reads
                  the config file; the environment and flags still override it.
                """
            )
        ])

    /// Every config key (the long flags without `--`), for docs and tests.
    public static var settingNames: [String] { settings.map(\.name) }

    static func format(_ seconds: Double) -> String {
        seconds == seconds.rounded() ? String(Int(seconds)) : String(seconds)
    }

    // MARK: - Parsing

    /// Parses `arguments` (without the program name). `environment` looks up
    /// `ECHOCHAT_*` variables and `readFile` loads `--config FILE`; both are
    /// parameters so tests need neither a real environment nor files.
    public static func parse(
        _ arguments: [String], environment: (String) -> String? = { _ in nil },
        readFile: (String) throws -> String
    ) throws(UsageError) -> Command {
        let found: [Occurrence<ServerConfiguration>]
        switch try parser.scan(arguments) {
        case .help: return .help
        case .version: return .version
        case .options(let options): found = options
        }
        var layers = LayeredSettings(ServerConfiguration())
        if let configFile = found.last(where: { $0.option.name == "config" })?.value {
            let text: String
            do { text = try readFile(configFile) } catch {
                throw UsageError("cannot read config file '\(configFile)': \(error)")
            }
            try parser.applyConfigFile(text, path: configFile, to: &layers)
            layers.settings.configFile = configFile
        }
        try parser.applyEnvironment(prefix: environmentPrefix, lookup: environment, to: &layers)
        try parser.applyFlags(found, to: &layers)
        return found.contains(where: { $0.option.name == "check-config" }) ? .checkConfig(layers) : .run(layers.settings)
    }

    /// Applies a config file's `key = value` lines to `config`.
    public static func applyConfigFile(
        _ text: String, path: String, to config: inout ServerConfiguration
    ) throws(UsageError) {
        var layers = LayeredSettings(config)
        try parser.applyConfigFile(text, path: path, to: &layers)
        config = layers.settings
    }

    // MARK: - Output

    public static var helpText: String { parser.helpText }
    public static var versionText: String { parser.versionText }
    public static var usageLine: String { parser.usage }

    /// What `--check-config` prints: a comment naming the layers, then every
    /// setting as `key = value  # source`, which is itself a valid config file.
    public static func render(_ layers: LayeredSettings<ServerConfiguration>) -> String {
        let file = layers.settings.configFile.map { "\($0) < " } ?? ""
        return "# effective settings: defaults < \(file)environment (ECHOCHAT_*) < flags\n" + parser.render(layers)
    }

    /// What bad usage prints on stderr before exiting with 64.
    public static func errorText(_ error: UsageError) -> String { parser.errorText(error) }
}
