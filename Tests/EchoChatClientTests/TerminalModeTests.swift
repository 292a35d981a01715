import EchoChatClient
import EchoChatPOSIX
import EchoChatTestSupport
import Foundation
import Testing

/// `echochat` on a real pseudo-terminal, as a user sees it: the test types
/// into the master side and reads the screen back through `ScreenModel`.
@Suite("echochat on a terminal", .ownThreads)
struct TerminalModeTests {
    /// The client on a fresh 80-column pty; waits for its first prompt.
    private func startClient(
        _ arguments: [String], environment extra: [String: String] = [:]
    ) throws -> (ChildProcess, PseudoTerminal) {
        let terminal = try PseudoTerminal(columns: 80)
        let client = try ChildProcess(
            clientBinary, arguments, environment: environment(["TERM": "xterm-256color"].merging(extra) { $1 }),
            terminal: terminal)
        try terminal.waitForScreen("the prompt") { $0.cursorRow == ">" }
        return (client, terminal)
    }

    /// A chat server with `bob` in #lobby.
    private func chatWithBob() throws -> (ServerProcess, TestClient) {
        let server = try ServerProcess(["--mode", "chat"], strategy: .epoll)
        let (bob, _) = try server.joinChat()
        try bob.send("/nick bob\n")
        #expect(try bob.readLine() == "* you are now bob")
        return (server, bob)
    }

    @Test func anIncomingMessageLeavesTheHalfTypedLineIntact() throws {
        let (server, bob) = try chatWithBob()
        let (alice, terminal) = try startClient(["--port", String(server.port), "--nick", "alice", "--no-color"])
        try terminal.waitForScreen("the nick reply") { $0.rows.contains("* you are now alice") }
        _ = try bob.readLines(until: { $0 == "* guest1 is now alice" })

        try alice.write("hello wor")
        try terminal.waitForScreen("the typed text") { $0.cursorRow == "> hello wor" }
        try bob.send("hi alice\n")
        let screen = try terminal.waitForScreen("bob's line") { $0.rows.contains("<bob> hi alice") }
        // The line arrived above; the prompt and the partial input were drawn
        // again below it, with the cursor right after the typed text.
        #expect(Array(screen.nonEmptyRows.suffix(2)) == ["<bob> hi alice", "> hello wor"])
        #expect(screen.cursorRow == "> hello wor")
        #expect(screen.column == 11)
        #expect(terminal.output.text.contains("<bob> hi alice\r\n\r> hello wor"))

        try alice.write("ld\r")
        #expect(try bob.readLine() == "<alice> hello world")
        try terminal.waitForScreen("the sent line kept") { $0.rows.contains("> hello world") && $0.cursorRow == ">" }

        try alice.write("/quit\r")
        #expect(try alice.waitForExit() == 0)
        let end = try terminal.waitForScreen("the closing line") {
            $0.rows.contains("echochat: connection closed by server")
        }
        #expect(Array(end.nonEmptyRows.suffix(3)) == ["> /quit", "* bye", "echochat: connection closed by server"])
        #expect(!containsColor(terminal.output.text))
        #expect(try terminal.isCanonicalWithEcho())
        alice.expectNoReports()
    }

    @Test func coloursOnATerminalAndControlCQuits() throws {
        let (server, bob) = try chatWithBob()
        let (alice, terminal) = try startClient(["--port", String(server.port)])
        _ = try bob.readLines(until: { $0 == "* guest1 joined #lobby" })
        try bob.send("colourful\n")
        let bobColor = "\u{1B}[\(LineStyle.nickColor("bob"))mbob\u{1B}[0m"
        try terminal.output.waitFor(text: "<\(bobColor)> colourful")
        #expect(terminal.output.text.contains("\u{1B}[36m* welcome guest1"))

        try alice.write("half typed")
        try terminal.waitForScreen("the typed text") { $0.cursorRow == "> half typed" }
        try alice.write("\u{03}")
        #expect(try alice.waitForExit() == 130)
        #expect(try bob.readLine() == "* guest1 left #lobby")
        #expect(try terminal.isCanonicalWithEcho())
        alice.expectNoReports()
    }

    @Test(arguments: [["NO_COLOR": "1"], ["TERM": "xterm-256color"]])
    func noColourWithNoColorOrTheFlag(environment extra: [String: String]) throws {
        let (server, bob) = try chatWithBob()
        let flags = extra["NO_COLOR"] == nil ? ["--no-color"] : []
        let (alice, terminal) = try startClient(["--port", String(server.port)] + flags, environment: extra)
        _ = try bob.readLines(until: { $0 == "* guest1 joined #lobby" })
        try bob.send("plain\n[pm from x] y\n/msg guest1 psst\n/nick\n")
        try terminal.waitForScreen("every kind of line") {
            $0.rows.contains("<bob> plain") && $0.rows.contains("[pm from bob] psst")
        }
        // Ctrl-D: end of input; the server answers what it has and closes.
        try alice.write("\u{04}")
        #expect(try alice.waitForExit() == 0)
        try terminal.waitForScreen("the closing line") { $0.rows.last(where: { !$0.isEmpty }) == "echochat: connection closed by server" }
        #expect(!containsColor(terminal.output.text))
        #expect(try terminal.isCanonicalWithEcho())
    }

    @Test func echoModeOnATerminal() throws {
        let server = try ServerProcess(["--mode", "echo"], strategy: .epoll)
        let (client, terminal) = try startClient(["--port", String(server.port), "--no-color"])
        try client.write("ping\r")
        try terminal.waitForScreen("the echo") { Array($0.nonEmptyRows.suffix(3)) == ["> ping", "ping", ">"] }
        try client.write("unsent")
        try terminal.waitForScreen("the typed text") { $0.cursorRow == "> unsent" }
        #expect(try server.stop() == 0)
        #expect(try client.waitForExit() == 0)
        let screen = try terminal.waitForScreen("the closing line") {
            $0.rows.contains("echochat: connection closed by server")
        }
        #expect(!screen.rows.contains("> unsent"))
        #expect(try terminal.isCanonicalWithEcho())
    }

    @Test func sigtermRestoresTheTerminal() throws {
        let server = try ServerProcess(["--mode", "echo"], strategy: .epoll)
        let (client, terminal) = try startClient(["--port", String(server.port)])
        client.signal(.terminate)
        #expect(try client.waitForExit() == 143)
        #expect(try terminal.isCanonicalWithEcho())
    }
}
