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

    public init() {}
}

/// A bad flag or value. The message is the text after `Error: `.
public struct ClientUsageError: Error, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Command-line handling for `echochat`, by hand in swift-argument-parser's
/// conventions (as `ServerOptions` does for the server): `USAGE:`/`OPTIONS:`
/// help with defaults, `Error: …` plus a usage hint on stderr, exit 64.
public enum ClientOptions {
    public static let version = "0.1.0"

    public enum Command: Equatable {
        case run(ClientConfiguration)
        case help
        case version
    }

    /// Parses `arguments` (without the program name). Both `--port 7008`
    /// and `--port=7008` work.
    public static func parse(_ arguments: [String]) throws(ClientUsageError) -> Command {
        var config = ClientConfiguration()
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            switch argument {
            case "-h", "--help": return .help
            case "--version": return .version
            case "--no-color":
                config.colorAllowed = false
                continue
            default: break
            }
            guard argument.hasPrefix("--"), argument.count > 2 else {
                if argument.hasPrefix("-") && argument != "-" { throw ClientUsageError("unknown option '\(argument)'") }
                throw ClientUsageError("unexpected argument '\(argument)'")
            }
            var name = String(argument.dropFirst(2))
            var value: String?
            if let equals = name.firstIndex(of: "=") {
                value = String(name[name.index(after: equals)...])
                name = String(name[..<equals])
            }
            guard ["host", "port", "nick", "room"].contains(name) else {
                if name == "no-color" { throw ClientUsageError("'--no-color' takes no value") }
                throw ClientUsageError("unknown option '--\(name)'")
            }
            if value == nil {
                guard index < arguments.count else { throw ClientUsageError("missing value for '--\(name)'") }
                value = arguments[index]
                index += 1
            }
            let text = value!
            switch name {
            case "host":
                guard !text.isEmpty, !text.contains(where: { $0 == " " || $0 == "\t" || $0 == "\0" }) else {
                    throw ClientUsageError("invalid value '\(text)' for '--host': expected an address or host name")
                }
                config.host = text
            case "port":
                guard let port = Int(text), (1...65535).contains(port) else {
                    throw ClientUsageError("invalid value '\(text)' for '--port': expected an integer from 1 to 65535")
                }
                config.port = port
            case "nick":
                // Checked here, not only by the server: the value goes into a
                // command line, so it must not smuggle a line end or a second
                // command in (PROTOCOL.md §3.4 names).
                guard isValidName(text) else {
                    throw ClientUsageError(
                        "invalid value '\(text)' for '--nick': expected 1 to 32 of A-Z a-z 0-9 _ -")
                }
                config.nick = text
            default:
                guard isValidName(text.hasPrefix("#") ? String(text.dropFirst()) : text) else {
                    throw ClientUsageError(
                        "invalid value '\(text)' for '--room': expected 1 to 32 of A-Z a-z 0-9 _ -, with or without a leading #")
                }
                config.room = text
            }
        }
        return .run(config)
    }

    /// Nicks and rooms alike: 1–32 of `A–Z a–z 0–9 _ -` (PROTOCOL.md §3.4).
    static func isValidName(_ name: String) -> Bool {
        (1...32).contains(name.utf8.count)
            && name.utf8.allSatisfy { byte in
                (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte) || (0x30...0x39).contains(byte)
                    || byte == 0x5F || byte == 0x2D
            }
    }

    // MARK: - Help

    public static let usageLine = "echochat [--host <host>] [--port <port>] [--nick <name>] [--room <room>] [--no-color]"

    public static var helpText: String {
        let defaults = ClientConfiguration()
        let rows: [(String, String)] = [
            ("--host <host>", "Server address or host name (default: \(defaults.host))"),
            ("--port <port>", "Server TCP port (default: \(defaults.port))"),
            ("--nick <name>", "Send /nick <name> right after connecting"),
            ("--room <room>", "Send /join <room> right after connecting"),
            ("--no-color", "No colours (neither with NO_COLOR set, nor when stdout is not a terminal)"),
            ("--version", "Show the version."),
            ("-h, --help", "Show help information."),
        ]
        let keys: [(String, String)] = [
            ("Enter", "send the line"),
            ("Ctrl-D", "on an empty line: end of input (the server closes when done)"),
            ("Ctrl-C", "quit"),
            ("Left/Right, Home/End", "move (also Ctrl-B/F, Ctrl-A/E; Ctrl- or Alt-arrows by word)"),
            ("Backspace, Delete", "delete a character"),
            ("Ctrl-U, Ctrl-K, Ctrl-W", "delete to start of line, to end of line, the word before"),
            ("Up/Down", "previous/next line sent"),
            ("Ctrl-L, Ctrl-Z", "redraw the screen, suspend"),
        ]
        func table(_ rows: [(String, String)]) -> String {
            let width = rows.map(\.0.count).max()! + 2
            return rows.map { "  " + $0.0 + String(repeating: " ", count: width - $0.0.count) + $0.1 }
                .joined(separator: "\n")
        }
        return """
            OVERVIEW: EchoChat client: talk to an echochat-server, from a terminal or a pipe.

            On a terminal, lines from the server appear above the line you are
            typing. Otherwise it works like `nc -N`: it sends standard input, then
            half-closes, and prints exactly what the server sends until it closes.

            USAGE: \(usageLine)

            OPTIONS:
            \(table(rows))

            KEYS (on a terminal):
            \(table(keys))

            """
    }

    /// What bad usage prints on stderr before exiting with 64.
    public static func errorText(_ error: ClientUsageError) -> String {
        "Error: \(error.message)\nUsage: \(usageLine)\n  See 'echochat --help' for more information.\n"
    }
}
