import EchoChatClient
import EchoChatOptions
import EchoChatPOSIX
import EchoChatTestSupport
import Foundation
import Glibc
import Testing

/// `echochat` with standard input and output on pipes: it must behave like
/// `nc -N`, byte for byte.
@Suite("echochat in pipe mode", .ownThreads)
struct PipeModeTests {
    static let closedLine = "echochat: connection closed by server\n"

    @Test func echoRoundTripIsByteExact() throws {
        let server = try ServerProcess(["--mode", "echo"], strategy: .epoll)
        // Every byte value, CR LF, NUL, invalid UTF-8, and no line end at the end.
        let input: [UInt8] = (0..<4).flatMap { _ in (0...255).map { UInt8($0) } } + Array("a\r\nb\n".utf8) + [0xFF, 0xC3, 0x00]
        let result = try runRaw(clientBinary, ["--port", String(server.port)], input: input)
        #expect(result.status == 0)
        #expect(result.stdout == input)
        #expect(result.stderr == Self.closedLine)
    }

    /// The README's example, exactly.
    @Test func printfHiPrintsHi() throws {
        let server = try ServerProcess(["--mode", "echo"], strategy: .epoll)
        let result = try runRaw(clientBinary, ["--port", String(server.port)], input: Array("hi\n".utf8))
        #expect(result.stdout == Array("hi\n".utf8))
        #expect(result.status == 0)
    }

    /// A MiB through a server that stops reading the client whenever 64 KiB
    /// are queued for it: nothing lost, nothing reordered.
    @Test func largeInputThroughBackpressureArrivesWhole() throws {
        let server = try ServerProcess(["--mode", "echo", "--max-output", "64K"], strategy: .epoll)
        let input = TestBytes.make(1 << 20) { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 7) }
        let result = try runRaw(clientBinary, ["--port", String(server.port)], input: input, timeout: 30)
        #expect(result.status == 0)
        #expect(result.stdout.count == input.count)
        #expect(result.stdout == input)
    }

    /// The client reads the server while its own sends are stuck: a peer
    /// that never reads sends a MiB while the client has 8 MiB of input to
    /// send. A client that blocked in send(2) would stop reading once the
    /// kernel buffers filled, and neither side would ever finish.
    @Test func readsWhileItsSendsAreStuck() throws {
        let listener = try Socket.listen(host: "127.0.0.1", port: 0, nonBlocking: false)
        let port = try listener.localAddress().port
        let payload = TestBytes.make(1 << 20) { UInt8(truncatingIfNeeded: $0 % 251) }
        let peer = Background { () throws -> Socket in
            guard try Poll.readable([listener.descriptor], timeoutMilliseconds: 10_000) == [true],
                case .done(let connection) = try listener.accept(nonBlocking: false)
            else { throw TestFailure("the client did not connect") }
            try connection.setSendTimeout(seconds: 10)
            try connection.writeAll(payload)
            return connection
        }
        // The peer thread polls the listener: it must be done before the
        // listener's descriptor is closed (and perhaps reused by another test).
        defer {
            peer.wait(timeout: 30)
            listener.close()
        }
        let client = try ChildProcess(clientBinary, ["--port", String(port)])
        let flood = [UInt8](repeating: UInt8(ascii: "x"), count: 8 << 20)
        // Fails once the client has gone (EPIPE): expected, so not checked.
        let writer = Background { try? client.write(flood) }
        // 30 s: a debug client under AddressSanitizer, beside other test processes, took over 10.
        try client.stdout.waitFor("the peer's MiB", timeout: 30) { $0.count >= payload.count }
        let connection = try peer.value(timeout: 10)
        defer { connection.close() }
        #expect(client.stdout.data == payload)
        connection.shutdownWrite()
        #expect(try client.waitForExit() == 0)
        #expect(client.stderr?.text == Self.closedLine)
        // The client is gone, so the writer's last write fails and it ends.
        try writer.value(timeout: 40)
        client.closeInput()
    }

    /// --nick and --room go first; then lines typed are messages; the other
    /// side's messages arrive while our input is still open; at end of
    /// input the server closes and stdout holds exactly what it sent.
    @Test func chatsWithNickAndRoom() throws {
        let server = try ServerProcess(["--mode", "chat"], strategy: .epoll)
        let (bob, _) = try server.joinChat()
        try bob.send("/nick bob\n/join dev\n")
        #expect(try bob.readLines(2) == ["* you are now bob", "* you joined #dev (1 here)"])

        let alice = try ChildProcess(clientBinary, ["--port", String(server.port), "--nick", "alice", "--room", "dev"])
        try alice.stdout.waitFor(text: "* you joined #dev (2 here)\n")
        #expect(try bob.readLine() == "* alice joined #dev")
        try alice.write("hello bob\n")
        #expect(try bob.readLine() == "<alice> hello bob")
        try bob.send("hi alice\n")
        try alice.stdout.waitFor(text: "<bob> hi alice\n")
        alice.closeInput()
        #expect(try alice.waitForExit() == 0)
        #expect(try bob.readLine() == "* alice left #dev")
        #expect(alice.stdout.text == """
            * welcome guest1, you are in #lobby (1 here); /help lists commands
            * you are now alice
            * you joined #dev (2 here)
            <bob> hi alice

            """)
        #expect(alice.stderr?.text == Self.closedLine)
        alice.expectNoReports()
    }

    /// `/quit` with input still open: the server's close alone ends the client.
    @Test func serverCloseAfterQuitExitsZero() throws {
        let server = try ServerProcess(["--mode", "chat"], strategy: .epoll)
        let client = try ChildProcess(clientBinary, ["--port", String(server.port)])
        try client.stdout.waitFor(text: "/help lists commands\n")
        try client.write("/quit\n")
        #expect(try client.waitForExit() == 0)
        #expect(client.stdout.text.hasSuffix("\n* bye\n"))
        #expect(client.stderr?.text == Self.closedLine)
    }

    /// Echo mode, input still open, the server shuts down.
    @Test func serverShutdownInEchoModeExitsZero() throws {
        let server = try ServerProcess(["--mode", "echo"], strategy: .epoll)
        let client = try ChildProcess(clientBinary, ["--port", String(server.port)])
        try client.write("ping\n")
        try client.stdout.waitFor(text: "ping\n")
        #expect(try server.stop() == 0)
        #expect(try client.waitForExit() == 0)
        #expect(client.stdout.text == "ping\n")
        #expect(client.stderr?.text == Self.closedLine)
    }

    @Test func connectionRefusedIsOneLineAndStatusOne() throws {
        let (port, descriptor) = try refusingPort()
        defer { close(descriptor) }
        let result = try runProgram(clientBinary, ["--port", String(port)])
        #expect(result.status == 1)
        #expect(result.stderr == "Error: cannot connect to 127.0.0.1:\(port): Connection refused\n")
        #expect(result.stdout == "")
    }

    @Test(arguments: [["--bogus"], ["--port", "0"], ["--port"], ["--nick", "no spaces"], ["extra"]])
    func badUsageExits64(arguments: [String]) throws {
        let result = try runProgram(clientBinary, arguments)
        #expect(result.status == 64)
        #expect(result.stderr.hasPrefix("Error: "))
        #expect(result.stderr.hasSuffix("Usage: \(ClientOptions.usageLine)\n  See 'echochat --help' for more information.\n"))
        #expect(result.stdout == "")
    }

    @Test func helpAndVersionExitZero() throws {
        let help = try runProgram(clientBinary, ["--help"])
        #expect(help.status == 0)
        #expect(help.stdout == ClientOptions.helpText)
        #expect(try runProgram(clientBinary, ["-h"]).stdout == ClientOptions.helpText)
        let version = try runProgram(clientBinary, ["--version"])
        #expect(version.status == 0)
        #expect(version.stdout == "echochat \(Release.version)\n")
    }
}
