import EchoChatPOSIX
import EchoChatTestSupport
import Foundation
import Testing

/// netcat is a first-class client: the README's sessions, run with the real
/// tools (CI installs netcat-openbsd and ncat; elsewhere these tests are
/// skipped without them, naming the packages).
@Suite("netcat as a client", .ownThreads)
struct NetcatTests {
    /// netcat-openbsd needs -N to shut down its sending side at the end of
    /// input; ncat does that by default (and keeps reading until the server
    /// closes). `-w 10` / `-w 10s` bound connecting, so a bug cannot hang.
    static func command(_ tool: String, port: Int, pipe: Bool) throws -> (String, [String]) {
        switch tool {
        case "nc": (try RequiredTool.nc.path(), (pipe ? ["-N"] : []) + ["-w", "10", "127.0.0.1", String(port)])
        default: (try RequiredTool.ncat.path(), ["-w", "10s", "127.0.0.1", String(port)])
        }
    }

    // Skipped without netcat-openbsd and ncat; a failure under CI=true.
    @Test(.requires(.nc, .ncat), arguments: ["nc", "ncat"])
    func echoRoundTripIsByteExact(tool: String) throws {
        let server = try ServerProcess(["--mode", "echo"], strategy: .epoll)
        let input: [UInt8] = Array("hello\nworld\n".utf8) + (0...255).map { UInt8($0) } + [0xFF, 0x00]
        let (path, arguments) = try Self.command(tool, port: server.port, pipe: true)
        let result = try runRaw(path, arguments, input: input)
        #expect(result.status == 0)
        #expect(result.stdout == input)
    }

    /// The README's chat session, step by step: two netcat processes with
    /// their input kept open, every read bounded by a deadline.
    // Skipped without netcat-openbsd and ncat; a failure under CI=true.
    @Test(.requires(.nc, .ncat), arguments: ["nc", "ncat"])
    func twoClientsChat(tool: String) throws {
        let server = try ServerProcess(["--mode", "chat"], strategy: .epoll)
        let (alicePath, aliceArguments) = try Self.command(tool, port: server.port, pipe: false)
        let alice = try ChildProcess(alicePath, aliceArguments)
        try alice.stdout.waitFor(text: "* welcome guest1, you are in #lobby (1 here); /help lists commands\n")
        try alice.write("/nick alice\n")
        try alice.stdout.waitFor(text: "* you are now alice\n")

        let bob = try ChildProcess(alicePath, aliceArguments)
        try bob.stdout.waitFor(text: "* welcome guest1, you are in #lobby (2 here); /help lists commands\n")
        try alice.stdout.waitFor(text: "* guest1 joined #lobby\n")
        try bob.write("/nick bob\n")
        try bob.stdout.waitFor(text: "* you are now bob\n")
        try alice.stdout.waitFor(text: "* guest1 is now bob\n")

        try bob.write("hi alice\n")
        try alice.stdout.waitFor(text: "<bob> hi alice\n")
        try alice.write("/msg bob see you in #dev\n")
        try alice.stdout.waitFor(text: "* sent to bob\n")
        try bob.stdout.waitFor(text: "[pm from alice] see you in #dev\n")
        try alice.write("/join dev\n")
        try alice.stdout.waitFor(text: "* you joined #dev (1 here)\n")
        try bob.stdout.waitFor(text: "* alice left #lobby\n")
        try bob.write("/join DEV\n")
        try bob.stdout.waitFor(text: "* you joined #dev (2 here)\n")
        try alice.stdout.waitFor(text: "* bob joined #dev\n")

        try alice.write("/quit bedtime\n")
        try alice.stdout.waitFor(text: "* bye\n")
        try bob.stdout.waitFor(text: "* alice left #dev (bedtime)\n")
        // Neither netcat exits when the server closes while its input is
        // still open: it waits for the end of input (Ctrl-D), then exits.
        alice.closeInput()
        #expect(try alice.waitForExit() == 0)
        #expect(alice.stdout.text == """
            * welcome guest1, you are in #lobby (1 here); /help lists commands
            * you are now alice
            * guest1 joined #lobby
            * guest1 is now bob
            <bob> hi alice
            * sent to bob
            * you joined #dev (1 here)
            * bob joined #dev
            * bye

            """)
        try bob.write("/quit\n")
        try bob.stdout.waitFor(text: "* bye\n")
        bob.closeInput()
        #expect(try bob.waitForExit() == 0)
        #expect(bob.stdout.text.hasSuffix("* alice left #dev (bedtime)\n* bye\n"))
    }

    /// The pipe form of chat: `printf '…' | nc -N` sends, then reads what the
    /// server answers until it closes after the end of input.
    // Skipped without netcat-openbsd and ncat; a failure under CI=true.
    @Test(.requires(.nc, .ncat), arguments: ["nc", "ncat"])
    func pipedChatLines(tool: String) throws {
        let server = try ServerProcess(["--mode", "chat"], strategy: .epoll)
        let (path, arguments) = try Self.command(tool, port: server.port, pipe: true)
        let result = try runRaw(path, arguments, input: Array("/nick carol\n/who\n".utf8))
        #expect(result.status == 0)
        #expect(String(decoding: result.stdout, as: UTF8.self) == """
            * welcome guest1, you are in #lobby (1 here); /help lists commands
            * you are now carol
            * #lobby: carol (1)

            """)
    }
}
