import EchoChatPOSIX
import EchoChatServer
import EchoChatTestSupport
import Foundation
import Testing

extension RequiredTool {
    /// coreutils is essential on Debian, but a bare image may still lack it.
    static let sha256sum = RequiredTool("sha256sum", package: "coreutils")
}

/// `echochat --upload` and `echochat --download` against the real server
/// with an upload directory, every strategy; every digest is checked against
/// coreutils' `sha256sum` on the same file, not against our own SHA-256.
@Suite("echochat file transfers end to end", .ownThreads)
struct ClientFileSharingTests {

    static func sha256sum(_ path: String) throws -> String {
        let result = try runProgram(try RequiredTool.sha256sum.path(), [path])
        guard result.status == 0 else { throw TestFailure("sha256sum \(path): \(result.stderr)") }
        return String(result.stdout.prefix(64))
    }

    /// Random bytes with what a line protocol could trip on in the middle.
    static func awkward(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        var bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let tricky = Array("\n/quit\n\r\n\u{0}/upload x 5\n".utf8) + [0xFF, 0x80, 0xC0]
        if count >= tricky.count * 2 { bytes.replaceSubrange(count / 2..<(count / 2 + tricky.count), with: tricky) }
        return bytes
    }

    func client(_ server: ServerProcess, _ arguments: [String]) throws -> ProgramResult {
        let result = try runProgram(clientBinary, ["--port", String(server.port)] + arguments, timeout: 60)
        return result
    }

    @Test(.requires(.sha256sum), arguments: Strategy.tested)
    func uploadThenDownloadVerifiedAgainstSha256sum(strategy: Strategy) throws {
        let shared = try TemporaryDirectory("shared")
        let local = try TemporaryDirectory("local")
        let downloads = try TemporaryDirectory("downloads")
        let server = try ServerProcess(["--mode", "chat", "--upload-dir", shared.path], strategy: strategy)
        let files: [(String, [UInt8])] = [
            ("empty", []), ("small.txt", Array("hello\n".utf8)), ("binary.bin", Self.awkward(70_000)),
            ("random.bin", Self.awkward((1 << 20) + 17)),
        ]
        for (name, content) in files {
            let path = try local.write(name, content)
            let digest = try Self.sha256sum(path)
            let up = try client(server, ["--upload", path])
            #expect(up.status == 0, "upload \(name): \(up.stderr)")
            #expect(up.stdout == "stored \(name) (\(content.count) bytes, sha256 \(digest))\n")
            #expect(shared.contents(name) == content, "\(name) on the server's disk")

            let down = try client(server, ["--download", name, "--download-dir", downloads.path])
            #expect(down.status == 0, "download \(name): \(down.stderr)")
            #expect(down.stdout == "saved \(downloads.path)/\(name) (\(content.count) bytes, sha256 \(digest))\n")
            #expect(try Self.sha256sum(downloads.path + "/" + name) == digest)
            #expect(downloads.contents(name) == content)
        }
        #expect(downloads.names == files.map(\.0).sorted(), "no temporary file left behind")
    }

    /// Names already taken are numbered, on the server (upload) and in the
    /// download directory (download), the number before the last dot.
    @Test(arguments: Strategy.tested)
    func takenNamesGetANumber(strategy: Strategy) throws {
        let shared = try TemporaryDirectory("shared")
        let local = try TemporaryDirectory("local")
        let downloads = try TemporaryDirectory("downloads")
        let server = try ServerProcess(["--mode", "chat", "--upload-dir", shared.path], strategy: strategy)
        let first = try local.write("notes.txt", Array("one\n".utf8))
        #expect(try client(server, ["--upload", first]).stdout.hasPrefix("stored notes.txt (4 bytes, "))
        let second = try local.write("other", Array("two!\n".utf8))
        let renamed = try client(server, ["--upload", second, "--as", "notes.txt"])
        #expect(renamed.status == 0, "\(renamed.stderr)")
        #expect(renamed.stdout.hasPrefix("stored notes-2.txt (5 bytes, "))

        for expected in ["notes.txt", "notes-2.txt", "notes-3.txt"] {
            let down = try client(server, ["--download", "notes.txt", "--download-dir", downloads.path])
            #expect(down.status == 0, "\(down.stderr)")
            #expect(down.stdout.hasPrefix("saved \(downloads.path)/\(expected) (4 bytes, "))
            #expect(downloads.contents(expected) == Array("one\n".utf8))
        }
        #expect(downloads.names == ["notes-2.txt", "notes-3.txt", "notes.txt"])
    }

    @Test(arguments: Strategy.tested)
    func refusalsExitOneWithTheServersWords(strategy: Strategy) throws {
        let shared = try TemporaryDirectory("shared")
        let local = try TemporaryDirectory("local")
        let downloads = try TemporaryDirectory("downloads")
        let server = try ServerProcess(
            ["--mode", "chat", "--upload-dir", shared.path, "--max-upload", "1K"], strategy: strategy)
        let missing = try client(server, ["--download", "nope.txt", "--download-dir", downloads.path])
        #expect(missing.status == 1)
        #expect(missing.stdout == "")
        #expect(missing.stderr == "Error: the server refused the download: ! no such file: nope.txt\n")
        #expect(downloads.names == [], "nothing saved, no temporary file left")

        let large = try local.write("large.bin", Self.awkward(2000))
        let tooLarge = try client(server, ["--upload", large])
        #expect(tooLarge.status == 1)
        #expect(tooLarge.stderr.hasPrefix("Error: the server refused the upload: ! file too large (max "))
        #expect(shared.names.filter { !$0.hasPrefix(".") } == [])
    }

    @Test func sharingOffIsAnError() throws {
        let local = try TemporaryDirectory("local")
        let server = try ServerProcess(["--mode", "chat"], strategy: .epoll)
        let path = try local.write("a.txt", Array("a\n".utf8))
        let up = try client(server, ["--upload", path])
        #expect(up.status == 1)
        #expect(up.stderr == "Error: the server refused the upload: ! file sharing is off on this server\n")
        let down = try client(server, ["--download", "a.txt", "--download-dir", local.path])
        #expect(down.status == 1)
        #expect(down.stderr == "Error: the server refused the download: ! file sharing is off on this server\n")
    }

    @Test func aMissingFileOrDirectoryFailsBeforeAnyTransfer() throws {
        let server = try ServerProcess(["--mode", "chat"], strategy: .epoll)
        let up = try client(server, ["--upload", "/nonexistent/a.txt"])
        #expect(up.status == 1)
        #expect(up.stderr == "Error: cannot read /nonexistent/a.txt: No such file or directory\n")
        let down = try client(server, ["--download", "a.txt", "--download-dir", "/nonexistent"])
        #expect(down.status == 1)
        #expect(down.stderr == "Error: cannot save in /nonexistent: not a directory\n")
    }

    /// On a terminal: `/upload PATH` sends the file while the user keeps
    /// typing (the typed line follows the content), the prompt shows
    /// progress, the outcome is the client's own line; `/download NAME`
    /// saves the announced content, and chat arriving right after it still
    /// shows.
    @Test(arguments: Strategy.tested)
    func uploadAndDownloadOnATerminal(strategy: Strategy) throws {
        let shared = try TemporaryDirectory("shared")
        let local = try TemporaryDirectory("local")
        let downloads = try TemporaryDirectory("downloads")
        let server = try ServerProcess(["--mode", "chat", "--upload-dir", shared.path], strategy: strategy)
        let (bob, _) = try server.joinChat()
        try bob.send("/nick bob\n")
        #expect(try bob.readLine() == "* you are now bob")

        let content = Self.awkward((2 << 20) + 3)
        let path = try local.write("big.bin", content)
        let terminal = try PseudoTerminal(columns: 200)
        let alice = try ChildProcess(
            clientBinary, ["--port", String(server.port), "--nick", "alice", "--no-color", "--download-dir", downloads.path],
            environment: environment(["TERM": "xterm-256color"]), terminal: terminal)
        try terminal.waitForScreen("the nick reply") { $0.rows.contains("* you are now alice") }
        _ = try bob.readLines(until: { $0 == "* guest1 is now alice" })

        try alice.write("/upload \(path) shared.bin\rright after\r")
        try terminal.waitForScreen("the upload's outcome", timeout: 30) {
            $0.rows.contains("echochat: sha256 matches what was sent")
        }
        #expect(terminal.output.text.contains("[upload shared.bin "), "progress in front of the prompt")
        #expect(try bob.readLine() == "* alice shared shared.bin (\(content.count) bytes)")
        #expect(try bob.readLine() == "<alice> right after")
        #expect(shared.contents("shared.bin") == content)

        try alice.write("/download shared.bin\r")
        try bob.send("hello alice\n")
        let screen = try terminal.waitForScreen("the download's outcome", timeout: 30) {
            $0.rows.contains("echochat: saved \(downloads.path)/shared.bin (\(content.count) bytes, sha256 verified)")
                && $0.rows.contains("<bob> hello alice")
        }
        #expect(screen.cursorRow == ">", "the plain prompt once nothing is under way")
        #expect(downloads.contents("shared.bin") == content)
        #expect(downloads.names == ["shared.bin"])

        try alice.write("/quit\r")
        #expect(try alice.waitForExit() == 0)
        alice.expectNoReports()
    }
}
