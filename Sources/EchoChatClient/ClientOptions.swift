import EchoChatOptions

/// What `echochat` was asked to do.
public struct ClientConfiguration: Equatable, Sendable {
    public var host = "127.0.0.1"
    public var port = 7007
    /// Sent as `/nick NAME` right after connecting.
    public var nick: String?
    /// Sent as `/join ROOM` right after connecting (after `/nick`).
    public var room: String?
    /// False with `--no-color`; colours also need a terminal and no `NO_COLOR`.
    public var colorAllowed = true
    /// `--upload PATH`: upload one file, then exit (0 when verified).
    public var upload: String?
    /// `--as NAME`: the name to store an upload as (default: PATH's last component).
    public var uploadName: String?
    /// `--download NAME`: download one file, then exit (0 when verified).
    public var download: String?
    /// Where downloads are saved, scripted or interactive.
    public var downloadDirectory = "."

    /// The scripted transfer asked for, if any.
    public var transfer: Transfer? {
        if let upload { return .upload(path: upload, name: uploadName ?? FileNames.lastComponent(upload)) }
        if let download { return .download(name: download) }
        return nil
    }

    public enum Transfer: Equatable, Sendable {
        case upload(path: String, name: String)
        case download(name: String)
    }

    public init() {}
}

/// Command-line handling for `echochat`, on the shared `OptionParser` (the
/// server and the load client use the same one).
public enum ClientOptions {
    public enum Command: Equatable {
        case run(ClientConfiguration)
        case help
        case version
    }

    static let options: [Option<ClientConfiguration>] = [
        Option("host", placeholder: "host", help: "Server address or host name", default: ClientConfiguration().host) {
            config, text, name throws(UsageError) in config.host = try Value.host(text, name)
        },
        Option("port", placeholder: "port", help: "Server TCP port", default: String(ClientConfiguration().port)) {
            config, text, name throws(UsageError) in config.port = try Value.integer(text, name, in: 1...65535)
        },
        // Names are checked here, not only by the server: the value goes into
        // a command line, so it must not smuggle a line end or a second
        // command in (docs/PROTOCOL.md §3.4 names).
        Option("nick", placeholder: "name", help: "Send /nick <name> right after connecting") {
            config, text, name throws(UsageError) in
            guard isValidName(text) else {
                throw UsageError("invalid value '\(text)' for \(name): expected 1 to 32 of A-Z a-z 0-9 _ -")
            }
            config.nick = text
        },
        Option("room", placeholder: "room", help: "Send /join <room> right after connecting") {
            config, text, name throws(UsageError) in
            guard isValidName(text.hasPrefix("#") ? String(text.dropFirst()) : text) else {
                throw UsageError(
                    "invalid value '\(text)' for \(name): expected 1 to 32 of A-Z a-z 0-9 _ -, with or without a leading #")
            }
            config.room = text
        },
        Option(
            "no-color", placeholder: nil,
            help: "No colours (neither with NO_COLOR set, nor when stdout is not a terminal)"
        ) { config, _, _ throws(UsageError) in config.colorAllowed = false },
        Option("upload", placeholder: "path", help: "Upload one file, check its SHA-256, exit (0 when verified)", inUsage: false) {
            config, text, name throws(UsageError) in
            guard !text.isEmpty else { throw UsageError("invalid value '' for \(name): expected a file") }
            config.upload = text
        },
        Option("as", placeholder: "name", help: "With --upload: the name to store it as", default: "the file's name", inUsage: false) {
            config, text, name throws(UsageError) in
            config.uploadName = try fileName(text, name)
        },
        Option("download", placeholder: "name", help: "Download one file, check its SHA-256, exit (0 when verified)", inUsage: false) {
            config, text, name throws(UsageError) in
            config.download = try fileName(text, name)
        },
        Option(
            "download-dir", placeholder: "dir", help: "Where downloads are saved, never overwriting (name-2, ...)",
            default: ClientConfiguration().downloadDirectory, inUsage: false
        ) { config, text, name throws(UsageError) in
            guard !text.isEmpty else { throw UsageError("invalid value '' for \(name): expected a directory") }
            config.downloadDirectory = text
        },
    ]

    /// A shared file's name, checked before connecting like nicks are.
    static func fileName(_ text: String, _ name: String) throws(UsageError) -> String {
        guard FileNames.isValid(text) else { throw UsageError("invalid value '\(text)' for \(name): expected \(FileNames.rule)") }
        return text
    }

    static let keys: [(String, String)] = [
        ("Enter", "send the line"),
        ("Ctrl-D", "on an empty line: end of input (the server closes when done)"),
        ("Ctrl-C", "quit"),
        ("Left/Right, Home/End", "move (also Ctrl-B/F, Ctrl-A/E; Ctrl- or Alt-arrows by word)"),
        ("Backspace, Delete", "delete a character"),
        ("Ctrl-U, Ctrl-K, Ctrl-W", "delete to start of line, to end of line, the word before"),
        ("Up/Down", "previous/next line sent"),
        ("Ctrl-L, Ctrl-Z", "redraw the screen, suspend"),
    ]

    public static let parser = OptionParser(
        command: "echochat",
        overview: """
            EchoChat client: talk to an echochat-server, from a terminal or a pipe.

            On a terminal, lines from the server appear above the line you are
            typing. Otherwise it works like `nc -N`: it sends standard input, then
            half-closes, and prints exactly what the server sends until it closes.
            With --upload or --download it does one file transfer and exits.
            """,
        options: options,
        sections: [
            ("KEYS (on a terminal)", OptionParser<ClientConfiguration>.table(keys)),
            ("FILES (on a terminal)", OptionParser<ClientConfiguration>.table(fileCommands)),
        ],
        moreUsage: [
            "echochat --upload <path> [--as <name>] [<options>]",
            "echochat --download <name> [--download-dir <dir>] [<options>]",
        ])

    static let fileCommands: [(String, String)] = [
        ("/upload PATH [NAME]", "the client sends the file (as NAME) and checks the server's SHA-256"),
        ("/download NAME", "saved in --download-dir, never overwriting; SHA-256 checked"),
    ]

    /// Parses `arguments` (without the program name).
    public static func parse(_ arguments: [String]) throws(UsageError) -> Command {
        var config = ClientConfiguration()
        switch try parser.parse(arguments, into: &config) {
        case .help: return .help
        case .version: return .version
        case .parsed: break
        }
        if config.upload != nil && config.download != nil {
            throw UsageError("--upload and --download cannot be used together")
        }
        if config.uploadName != nil && config.upload == nil { throw UsageError("--as needs --upload") }
        if let upload = config.upload, config.uploadName == nil, !FileNames.isValid(FileNames.lastComponent(upload)) {
            throw UsageError("cannot upload '\(upload)' under its own name: choose one with --as (\(FileNames.rule))")
        }
        return .run(config)
    }

    /// Nicks and rooms alike: 1–32 of `A–Z a–z 0–9 _ -` (docs/PROTOCOL.md §3.4).
    static func isValidName(_ name: String) -> Bool {
        (1...32).contains(name.utf8.count)
            && name.utf8.allSatisfy { byte in
                (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte) || (0x30...0x39).contains(byte)
                    || byte == 0x5F || byte == 0x2D
            }
    }

    public static var helpText: String { parser.helpText }
    public static var usageLine: String { parser.usage }

    /// What bad usage prints on stderr before exiting with 64.
    public static func errorText(_ error: UsageError) -> String { parser.errorText(error) }
}
