/// A line from the server, by the four markers of docs/PROTOCOL.md §3.2. Anything
/// else (echo mode, another server) is `other` and is shown as it is.
public enum ServerLine: Equatable, Sendable {
    /// `<nick> text`
    case roomMessage(nick: String, text: String)
    /// `[pm from nick] text`
    case privateMessage(nick: String, text: String)
    /// `* text`
    case notice(String)
    /// `! text`
    case error(String)
    case other(String)

    public init(_ line: String) {
        if line.hasPrefix("<"), let close = line.firstRange(of: "> "), close.lowerBound > line.index(after: line.startIndex) {
            let nick = line[line.index(after: line.startIndex)..<close.lowerBound]
            if !nick.contains(" ") {
                self = .roomMessage(nick: String(nick), text: String(line[close.upperBound...]))
                return
            }
        }
        let pm = "[pm from "
        if line.hasPrefix(pm), let close = line.firstRange(of: "] ") {
            let nick = line[line.index(line.startIndex, offsetBy: pm.count)..<close.lowerBound]
            if !nick.isEmpty && !nick.contains(" ") {
                self = .privateMessage(nick: String(nick), text: String(line[close.upperBound...]))
                return
            }
        }
        if line.hasPrefix("* ") {
            self = .notice(String(line.dropFirst(2)))
        } else if line.hasPrefix("! ") {
            self = .error(String(line.dropFirst(2)))
        } else {
            self = .other(line)
        }
    }
}

/// How lines look on a terminal: ANSI SGR colours when `colors` is on, the
/// text unchanged when it is off.
///
/// - room message: the nick in its own colour;
/// - private message: `[pm from` `]` in magenta, the nick in its colour;
/// - notice: cyan; error: bold red;
/// - the client's own lines (`echochat: …`): dim, so they never pass for the
///   server's, which in chat mode always start with `<`, `[pm from `, `* `
///   or `! `.
public struct LineStyle: Sendable {
    public let colors: Bool

    public init(colors: Bool) { self.colors = colors }

    /// The SGR foreground codes nicks are drawn in. Red, cyan and magenta are
    /// left out: errors, notices and private messages use them.
    public static let nickPalette = [32, 33, 34, 92, 93, 94]

    /// A nick's colour: the same on every run and for every spelling of the
    /// nick's case (the server compares nicks ignoring ASCII case), so it is
    /// an FNV-1a hash of the lower-cased bytes, not `hashValue`, which Swift
    /// seeds randomly per process.
    public static func nickColor(_ nick: String) -> Int {
        nickPalette[Int(fnv1a(nick.utf8.map { (0x41...0x5A).contains($0) ? $0 | 0x20 : $0 }) % UInt32(nickPalette.count))]
    }

    /// FNV-1a, 32 bits (Fowler, Noll, Vo).
    public static func fnv1a(_ bytes: some Sequence<UInt8>) -> UInt32 {
        var hash: UInt32 = 0x811C_9DC5
        for byte in bytes {
            hash ^= UInt32(byte)
            hash = hash &* 0x0100_0193
        }
        return hash
    }

    /// `line` (one server line, without its line end and already free of
    /// control characters) as it should appear.
    public func render(_ line: String) -> String {
        guard colors else { return line }
        switch ServerLine(line) {
        case .roomMessage(let nick, let text):
            return "<" + paint(nick, "\(Self.nickColor(nick))") + "> " + text
        case .privateMessage(let nick, let text):
            return paint("[pm from ", "35") + paint(nick, "\(Self.nickColor(nick))") + paint("]", "35") + " " + text
        case .notice:
            return paint(line, "36")
        case .error:
            return paint(line, "1;31")
        case .other:
            return line
        }
    }

    /// A line from the client itself, such as `echochat: connection closed by server`.
    public func renderClientLine(_ line: String) -> String {
        colors ? paint(line, "2") : line
    }

    private func paint(_ text: String, _ code: String) -> String {
        "\u{1B}[\(code)m" + text + "\u{1B}[0m"
    }
}
