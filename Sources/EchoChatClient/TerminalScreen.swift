import EchoChatCore

/// Everything the interactive client draws, as a pure state machine: bytes
/// typed and bytes received go in; the text to write to the terminal, and
/// what to do (send a line, end input, quit), come out. The bottom row is
/// always the prompt and the line being typed; a line from the server is
/// drawn by clearing that row, printing the line, and drawing the prompt and
/// the unfinished input again below it, cursor where it was.
///
/// The terminal is in raw mode, so every line ends with CR LF written here.
public struct TerminalScreen: Sendable {
    /// What the session must do after some keys.
    public enum Action: Equatable, Sendable {
        /// Bytes for the server (a line and its LF).
        case send([UInt8])
        /// Ctrl-D on an empty line: shut down the sending side.
        case endInput
        /// Ctrl-C.
        case interrupt
        /// Ctrl-Z: suspend, then call `redraw()` when continued.
        case suspend
    }

    public static let prompt = "> "
    /// A server line longer than this with no LF yet is shown anyway, so a
    /// server that never sends LF cannot make the client hold unbounded data.
    public static let maxPendingLine = 64 * 1024

    public var width: Int
    public private(set) var editor = LineEditor(prompt: TerminalScreen.prompt)
    /// False after Ctrl-D: no prompt any more, keys are ignored.
    public private(set) var inputOpen = true
    public let style: LineStyle
    private var decoder = KeyDecoder()
    private var partialLine: [UInt8] = []

    public init(width: Int, colors: Bool) {
        self.width = width
        style = LineStyle(colors: colors)
    }

    /// The first prompt.
    public mutating func start() -> String {
        editor.render(width: width)
    }

    /// Keys typed: the screen update and the actions, in order. Keys after
    /// one that ends input (Ctrl-D, Ctrl-C, Ctrl-Z) are not processed.
    public mutating func typed(_ bytes: some Sequence<UInt8>) -> (screen: String, actions: [Action]) {
        guard inputOpen else { return ("", []) }
        var screen = ""
        var actions: [Action] = []
        var dirty = false
        keys: for key in decoder.decode(bytes) {
            switch editor.apply(key) {
            case .unchanged:
                continue
            case .changed:
                dirty = true
            case .submit(let line):
                screen += editor.renderSubmitted(line)
                actions.append(.send(Array(line.utf8) + [0x0A]))
                dirty = true
            case .clearScreen:
                screen += "\u{1B}[H\u{1B}[2J"
                dirty = true
            case .endOfInput:
                screen += "\r\u{1B}[K"
                inputOpen = false
                actions.append(.endInput)
                return (screen, actions)
            case .interrupt:
                actions.append(.interrupt)
                break keys
            case .suspend:
                actions.append(.suspend)
                break keys
            }
        }
        if dirty { screen += editor.render(width: width) }
        return (screen, actions)
    }

    /// Bytes from the server: each complete line is printed above the prompt,
    /// which is drawn again after them (once per batch, not per line).
    /// Control characters are removed first (docs/PROTOCOL.md §3.1's rule), so a
    /// server, in echo mode say, cannot send escape sequences to the terminal.
    public mutating func received(_ bytes: some Sequence<UInt8>) -> String {
        var screen = ""
        for byte in bytes {
            if byte == 0x0A {
                screen += line(partialLine)
                partialLine.removeAll(keepingCapacity: true)
            } else {
                partialLine.append(byte)
                if partialLine.count >= Self.maxPendingLine {
                    screen += line(partialLine)
                    partialLine.removeAll(keepingCapacity: true)
                }
            }
        }
        if !screen.isEmpty && inputOpen { screen += editor.render(width: width) }
        return screen
    }

    /// The end: any unfinished server line, then `message` (the client's own
    /// line, e.g. `echochat: connection closed by server`) in place of the
    /// prompt; the cursor ends at the start of an empty row.
    public mutating func finish(_ message: String?) -> String {
        var screen = partialLine.isEmpty ? "" : line(partialLine)
        partialLine = []
        screen += "\r\u{1B}[K"
        if let message { screen += style.renderClientLine(message) + "\r\n" }
        return screen
    }

    /// A line from the client itself (how a file transfer ended), printed
    /// above the prompt like a server line, in the client's own style.
    public mutating func note(_ text: String) -> String {
        "\r\u{1B}[K" + style.renderClientLine(text) + "\r\n" + (inputOpen ? editor.render(width: width) : "")
    }

    /// The status shown on the prompt row, in front of the prompt
    /// (`[upload a.txt 42%] > `); nil shows the plain prompt.
    public mutating func status(_ text: String?) -> String {
        let prompt = text.map { "[\($0)] " + Self.prompt } ?? Self.prompt
        guard prompt != editor.prompt else { return "" }
        editor.prompt = prompt
        return inputOpen ? editor.render(width: width) : ""
    }

    /// Before suspending: the prompt row cleared.
    public func clearInput() -> String {
        "\r\u{1B}[K"
    }

    /// The prompt and input again (after a resize or a suspension).
    public mutating func redraw() -> String {
        inputOpen ? editor.render(width: width) : ""
    }

    private func line(_ raw: [UInt8]) -> String {
        var bytes = raw[...]
        if bytes.last == 0x0D { bytes = bytes.dropLast() }
        let clean = bytes.withUnsafeBytes { LineHygiene.clean($0) }
        return "\r\u{1B}[K" + style.render(String(decoding: clean, as: UTF8.self)) + "\r\n"
    }
}
