import EchoChatCore
import EchoChatPOSIX
import EchoChatServer
import EchoChatTestSupport
import Foundation
import Testing

/// File sharing (docs/PROTOCOL.md §5) against the real server, every strategy:
/// round trips of awkward content, every refusal consuming exactly its bytes,
/// a connection that ends mid-upload, a disk error, a download nobody reads
/// while others chat, netcat, and the upload directory at start.
@Suite("File sharing end to end", .ownThreads)
struct FileSharingTests {
    static func hex(_ bytes: [UInt8]) -> String { SHA256.hex(SHA256.hash(bytes)) }

    /// Socket timeout: hashing and copying 16 MiB takes a ThreadSanitizer
    /// build many seconds.
    static let timeout = 60.0

    /// Seeded bytes with everything a line protocol could trip on.
    static func awkward(_ count: Int, seed: UInt64) -> [UInt8] {
        var state = seed
        var bytes = TestBytes.make(count) { _ in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return UInt8(truncatingIfNeeded: state >> 56)
        }
        let tricky = Array("\n/quit\n\r\n\u{0}/upload x 5\n".utf8) + [0xFF, 0x80, 0xC0]
        if count >= tricky.count * 2 { bytes.replaceSubrange(count / 2..<(count / 2 + tricky.count), with: tricky) }
        return bytes
    }

    func upload(_ client: TestClient, _ name: String, _ content: [UInt8]) throws -> String {
        try client.send(Array("/upload \(name) \(content.count)\n".utf8) + content)
        return try client.readLine()
    }

    @Test(arguments: Strategy.tested)
    func everyKindOfFileMakesTheRoundTrip(strategy: Strategy) throws {
        let directory = try TemporaryDirectory()
        let server = try ServerProcess(["--mode", "chat", "--upload-dir", directory.path], strategy: strategy)
        let (alice, _) = try server.joinChat(timeout: Self.timeout)
        let (bob, bobNick) = try server.joinChat(timeout: Self.timeout)
        _ = try alice.readLine()  // bob joined
        let files: [(String, [UInt8])] = [
            ("empty", []), ("small.txt", Array("hello\n".utf8)), ("binary.bin", Self.awkward(70_000, seed: 1)),
            ("big.bin", Self.awkward(16 << 20, seed: 2)),
        ]
        // Hashed once each: 16 MiB takes a debug build under a sanitizer seconds.
        let digests = Dictionary(uniqueKeysWithValues: files.map { ($0.0, Self.hex($0.1)) })
        for (name, content) in files {
            #expect(try upload(bob, name, content) == "* stored \(name) (\(content.count) bytes, sha256 \(digests[name]!))")
            #expect(try alice.readLine() == "* \(bobNick) shared \(name) (\(content.count) bytes)")
            #expect(directory.contents(name) == content, "\(name) on disk")
        }
        // The same name again: numbered before the last dot.
        #expect(try upload(bob, "small.txt", Array("again".utf8)).hasPrefix("* stored small-2.txt (5 bytes, sha256 "))
        _ = try alice.readLine()
        try alice.send("/files\n")
        #expect(try alice.readLine() == "* files: big.bin (16777216), binary.bin (70000), empty (0), small-2.txt (5), small.txt (6)")
        for (name, content) in files {
            try alice.send("/download \(name)\n/who\n")
            #expect(try alice.readLine() == "* sending \(name) \(content.count) sha256 \(digests[name]!)")
            let received = try alice.read(count: content.count)
            #expect(received == content, "\(name) downloaded")
            #expect(try alice.readLine().hasPrefix("* #lobby: "), "lines resume after the content")
        }
        try alice.send("/stats\n")
        let stats = try parseStats(alice.readLine())
        #expect(stats["files"] == "5")
        #expect(stats["files_bytes"] == String(files.map(\.1.count).reduce(0, +) + 5))
        #expect(!directory.names.contains { $0.hasPrefix(".") }, "no partial file left: \(directory.names)")
    }

    @Test(arguments: Strategy.tested)
    func everyRefusalConsumesExactlyItsBytes(strategy: Strategy) throws {
        let directory = try TemporaryDirectory()
        let server = try ServerProcess(
            ["--mode", "chat", "--upload-dir", directory.path, "--max-upload", "1000", "--upload-quota", "1500"], strategy: strategy)
        let (client, _) = try server.joinChat(timeout: Self.timeout)
        let long = String(repeating: "n", count: 101)
        let cases: [(command: String, content: Int, reply: String)] = [
            ("/upload ../x 10", 10, "! invalid file name: ../x"),
            ("/upload .hidden 10", 10, "! invalid file name: .hidden"),
            ("/upload a/b 10", 10, "! invalid file name: a/b"),
            ("/upload \(long) 10", 10, "! invalid file name: \(long)"),
            ("/upload big 1001", 1001, "! file too large (max 1000 bytes)"),
            ("/upload ok 1000", 1000, "* stored ok (1000 bytes, sha256 \(Self.hex(Array(repeating: 0x2F, count: 1000))))"),
            ("/upload full 501", 501, "! server storage full"),
        ]
        for item in cases {
            // The content is slashes and LFs: were any of it read as lines, the
            // replies below would show it.
            let content = (0..<item.content).map { $0 % 7 == 6 ? UInt8(0x0A) : 0x2F }
            let payload = item.reply.hasPrefix("* stored") ? Array(repeating: UInt8(0x2F), count: 1000) : content
            try client.send(Array("\(item.command)\n".utf8) + payload + Array("/who\n".utf8))
            #expect(try client.readLine() == item.reply, "\(item.command)")
            #expect(try client.readLine().hasPrefix("* #lobby: "), "\(item.command): exactly its bytes consumed")
        }
        try client.send("/upload onlyone\n/upload x y\n/download\n/download nope\n/download ../etc\n/files\n")
        #expect(try client.readLines(6) == [
            "! usage: /upload NAME SIZE", "! usage: /upload NAME SIZE", "! usage: /download NAME",
            "! no such file: nope", "! no such file: ../etc", "* files: ok (1000)",
        ])
        #expect(directory.names == ["ok"])
    }

    @Test(arguments: Strategy.tested)
    func withoutAnUploadDirectorySharingIsOffAndUploadsStillConsumeTheirBytes(strategy: Strategy) throws {
        let server = try ServerProcess(["--mode", "chat"], strategy: strategy)
        let (client, nick) = try server.joinChat(timeout: Self.timeout)
        try client.send("/upload a.txt 7\n/quit\n\n/files\n/download a.txt\n/who\n")
        #expect(try client.readLines(4) == [
            "! file sharing is off on this server", "! file sharing is off on this server",
            "! file sharing is off on this server", "* #lobby: \(nick) (1)",
        ])
    }

    @Test(arguments: Strategy.tested)
    func aConnectionThatEndsMidUploadLeavesNothingAndIsNotAnnounced(strategy: Strategy) throws {
        let directory = try TemporaryDirectory()
        let server = try ServerProcess(["--mode", "chat", "--upload-dir", directory.path], strategy: strategy)
        let (watcher, _) = try server.joinChat(timeout: Self.timeout)
        for ending in ["close", "reset"] {
            let (uploader, nick) = try server.joinChat(timeout: Self.timeout)
            #expect(try watcher.readLine() == "* \(nick) joined #lobby")
            try uploader.send(Array("/upload gone.bin 100000\n".utf8) + Self.awkward(60_000, seed: 3))
            if ending == "reset" { try uploader.reset() } else { uploader.close() }
            let line = try watcher.readLine()
            #expect(line.hasPrefix("* \(nick) left #lobby"), "\(ending): no shared notice, only the leave: \(line)")
        }
        try watcher.send("/files\n")
        #expect(try watcher.readLine() == "* files: none")
        // The store removes a partial file on its own thread, one job after
        // another: once an upload sent after the leaves is stored, the
        // removals queued before it are done.
        #expect(try upload(watcher, "probe", []).hasPrefix("* stored probe (0 bytes"))
        #expect(directory.names == ["probe"], "left behind: \(directory.names)")
    }

    @Test(arguments: Strategy.tested)
    func aDiskErrorFailsThatUploadAndNothingElse(strategy: Strategy) throws {
        let directory = try TemporaryDirectory()
        let server = try ServerProcess(["--mode", "chat", "--upload-dir", directory.path], strategy: strategy)
        try server.limitFileSize(to: 50_000)  // writes past it fail with EFBIG, as on a full disk
        let (client, _) = try server.joinChat(timeout: Self.timeout)
        let content = Self.awkward(200_000, seed: 4)
        try client.send(Array("/upload huge.bin \(content.count)\n".utf8) + content + Array("/who\n".utf8))
        #expect(try client.readLine() == "! upload failed: File too large")
        #expect(try client.readLine().hasPrefix("* #lobby: "), "the rest of the content was consumed")
        #expect(try upload(client, "small", Array("fits".utf8)).hasPrefix("* stored small (4 bytes"))
        try client.send("/files\n")
        #expect(try client.readLine() == "* files: small (4)")
        #expect(directory.names == ["small"])
    }

    @Test(arguments: Strategy.tested)
    func aDownloadNobodyReadsHoldsOnlyItself(strategy: Strategy) throws {
        let directory = try TemporaryDirectory()
        let content = Self.awkward(16 << 20, seed: 5)
        try Data(content).write(to: URL(fileURLWithPath: directory.path + "/movie.bin"))
        let server = try ServerProcess(["--mode", "chat", "--upload-dir", directory.path], strategy: strategy)
        let (sleeper, _) = try server.joinChat(timeout: Self.timeout)
        try sleeper.send("/download movie.bin\n")
        #expect(try sleeper.readLine() == "* sending movie.bin \(content.count) sha256 \(Self.hex(content))")
        // It reads nothing more for now. Two others chat at full speed meanwhile.
        let (alice, aliceNick) = try server.joinChat(timeout: Self.timeout)
        let (bob, bobNick) = try server.joinChat(timeout: Self.timeout)
        _ = try alice.readLine()
        for index in 0..<500 {
            try bob.send("message \(index)\n")
            #expect(try alice.readLine() == "<\(bobNick)> message \(index)")
        }
        // The sleeper wakes up: every byte, then the lines that waited.
        let received = try sleeper.read(count: content.count)
        #expect(received == content)
        #expect(try sleeper.readLines(2) == ["* \(aliceNick) joined #lobby", "* \(bobNick) joined #lobby"])
    }

    @Test(.requires(.nc), arguments: [Strategy.epoll])
    func netcatUploadsAFile(strategy: Strategy) throws {
        let directory = try TemporaryDirectory()
        let server = try ServerProcess(["--mode", "chat", "--upload-dir", directory.path], strategy: strategy)
        let source = directory.path + "-a.txt"
        let content = Self.awkward(100_000, seed: 6)
        try Data(content).write(to: URL(fileURLWithPath: source))
        defer { try? FileManager.default.removeItem(atPath: source) }
        let script = "{ printf '/upload a.txt %d\\n' \"$(stat -c %s \(source))\"; cat \(source); } | nc -N 127.0.0.1 \(server.port)"
        let result = try runProgram("/bin/sh", ["-c", script], timeout: 30)
        #expect(result.stdout.contains("* stored a.txt (100000 bytes, sha256 \(Self.hex(content)))"), "\(result.stdout)\n\(result.stderr)")
        #expect(directory.contents("a.txt") == content)
    }

    /// A name found taken on disk when the upload is put in place (another
    /// server sharing the directory, or anything else) gets the next number;
    /// what is there is looked at without waiting on it, even a FIFO.
    @Test func aNameTakenOnDiskGetsTheNextNumberWhateverIsThere() throws {
        let directory = try TemporaryDirectory()
        let server = try ServerProcess(["--mode", "chat", "--upload-dir", directory.path])
        let (client, _) = try server.joinChat(timeout: Self.timeout)
        // Put there after the server read the directory: it does not list them.
        #expect(mkfifo(directory.path + "/pipe", 0o644) == 0)
        try Data("12345".utf8).write(to: URL(fileURLWithPath: directory.path + "/plain.txt"))
        #expect(try upload(client, "pipe", Array("abc".utf8)).hasPrefix("* stored pipe-2 (3 bytes, sha256 "))
        #expect(try upload(client, "plain.txt", Array("xyz".utf8)).hasPrefix("* stored plain-2.txt (3 bytes, sha256 "))
        // The file found in the way is listed from then on; the FIFO is not a file.
        try client.send("/files\n")
        #expect(try client.readLine() == "* files: pipe-2 (3), plain-2.txt (3), plain.txt (5)")
    }

    /// A file an operator copies into the directory is listed after a
    /// SIGHUP (docs/server.md); what is not a file with a valid name is not.
    @Test func aReloadListsFilesPutThereByHand() throws {
        let directory = try TemporaryDirectory()
        let server = try ServerProcess(["--mode", "chat", "--upload-dir", directory.path])
        let (client, _) = try server.joinChat(timeout: Self.timeout)
        let content = Array("by hand\n".utf8)
        try Data(content).write(to: URL(fileURLWithPath: directory.path + "/manual.txt"))
        try Data("x".utf8).write(to: URL(fileURLWithPath: directory.path + "/.hidden"))
        try Data("x".utf8).write(to: URL(fileURLWithPath: directory.path + "/bad name"))
        #expect(mkfifo(directory.path + "/pipe", 0o644) == 0)
        try client.send("/files\n")
        #expect(try client.readLine() == "* files: none")
        server.signal(.hangup)
        #expect(server.log.waitFor({ $0.contains("files: listed 1 found in the upload directory") }, timeout: 10) != nil)
        try client.send("/files\n/download manual.txt\n")
        #expect(try client.readLine() == "* files: manual.txt (\(content.count))")
        #expect(try client.readLine() == "* sending manual.txt \(content.count) sha256 \(Self.hex(content))")
        #expect(try client.read(count: content.count) == content)
    }

    /// A file deleted from the directory by hand: a `/download` of it says
    /// `! no such file` and unlists it, and its bytes no longer count
    /// against the quota; a SIGHUP unlists every file that is gone.
    @Test func filesDeletedByHandAreUnlisted() throws {
        let directory = try TemporaryDirectory()
        let server = try ServerProcess(["--mode", "chat", "--upload-dir", directory.path, "--upload-quota", "30"])
        let (client, _) = try server.joinChat(timeout: Self.timeout)
        let content = Array("0123456789".utf8)
        for name in ["a", "b", "c"] { #expect(try upload(client, name, content).hasPrefix("* stored \(name) (10 bytes, sha256 ")) }
        #expect(try upload(client, "d", content) == "! server storage full")
        try FileManager.default.removeItem(atPath: directory.path + "/a")
        try client.send("/download a\n/files\n")
        #expect(try client.readLine() == "! no such file: a")
        #expect(try client.readLine() == "* files: b (10), c (10)")
        #expect(server.log.waitFor({ $0.contains("files: unlisted a, gone from the upload directory") }, timeout: 10) != nil)
        #expect(try upload(client, "d", content).hasPrefix("* stored d (10 bytes, sha256 "))
        for name in ["b", "c"] { try FileManager.default.removeItem(atPath: directory.path + "/" + name) }
        server.signal(.hangup)
        #expect(server.log.waitFor({ $0.contains("files: unlisted 2 gone from the upload directory") }, timeout: 10) != nil)
        try client.send("/files\n/stats\n")
        #expect(try client.readLine() == "* files: d (10)")
        let stats = try client.readLine().split(separator: " ")
        #expect(stats.contains("files=1") && stats.contains("files_bytes=10"), "\(stats)")
    }

    @Test func theDirectoryIsCreatedCleanedAndReadAtStart() throws {
        let directory = try TemporaryDirectory()
        let path = directory.path + "/new/sub"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        try Data("12345".utf8).write(to: URL(fileURLWithPath: path + "/kept.txt"))
        // Partial files: an older server's and this machine's from a process
        // that no longer runs (no pid is this high) go; an upload under way
        // (this test's own pid) or on another machine sharing the directory stays.
        let gone = [".upload-2147483647-1", ".upload-\(System.hostName)-2147483647-3", ".upload-probe-2147483647"]
        let kept = [".upload-\(System.hostName)-\(System.processID)-1", ".upload-elsewhere.example-1-2"]
        for name in gone + kept { try Data("partial".utf8).write(to: URL(fileURLWithPath: path + "/" + name)) }
        let server = try ServerProcess(["--mode", "chat", "--upload-dir", path])
        let (client, _) = try server.joinChat(timeout: Self.timeout)
        try client.send("/files\n")
        #expect(try client.readLine() == "* files: kept.txt (5)")
        for name in gone { #expect(!FileManager.default.fileExists(atPath: path + "/" + name), "\(name): a crash's partial file is removed") }
        for name in kept { #expect(FileManager.default.fileExists(atPath: path + "/" + name), "\(name): an upload under way stays") }
        // Created when missing.
        let fresh = directory.path + "/a/b/c"
        let second = try ServerProcess(["--mode", "chat", "--upload-dir", fresh])
        #expect(FileManager.default.fileExists(atPath: fresh))
        _ = second
    }

    @Test func anUnusableDirectoryIsAClearStartUpError() throws {
        let directory = try TemporaryDirectory()
        let file = directory.path + "/plain"
        try Data("x".utf8).write(to: URL(fileURLWithPath: file))
        let result = try runProgram(ServerProcess.binary, ["--mode", "chat", "--port", "0", "--upload-dir", file + "/sub"], timeout: 10)
        #expect(result.status != 0)
        #expect(result.stderr.contains("cannot use the upload directory \(file)/sub"), "\(result.stderr)")
    }
}
