import Testing

@testable import EchoChatCore

/// The client's side of a socket for one `ConnectionMachine`: what it sent
/// waits here until the machine wants to read, and is read in the pieces a
/// `Chunking` cuts; the owner flushes after every event and gives turns, as
/// `Connection.serve` does. The fake store answers in the next mail, so the
/// driver flushes until nothing moves.
private struct Driver {
    var machine = ConnectionMachine(mode: .chat, settings: ConnectionSettings(), now: 0)
    var io: FakeIO
    var unread: [UInt8] = []
    var cutter: Chunking.Cutter
    var pieces: [Range<Int>] = []

    init(
        sharing: FileSharing? = FileSharing(maxUpload: 1000, quota: 5000), catalog: FileCatalog = FileCatalog(),
        chunking: Chunking
    ) {
        io = FakeIO(chat: true, fileSharing: sharing, catalog: catalog)
        cutter = Chunking.Cutter(chunking)
        machine.flush(now: 0, io: &io)  // the welcome
    }

    /// The client sends `bytes`; the server reads and answers until it settles.
    mutating func send(_ bytes: [UInt8]) {
        let start = unread.count
        unread += bytes
        pieces += cutter.pieces(count: bytes.count).map { ($0.lowerBound + start)..<($0.upperBound + start) }
        settle()
    }

    /// Serves the connection only when a strategy would: it wants a turn,
    /// wants to read and input is there, has mail (the owner is woken), or
    /// has output and the kernel has room (writable). A machine that waits
    /// for nothing of these while a transfer is unfinished is stuck.
    mutating func settle() {
        for _ in 0..<100_000 {
            if machine.isClosed { return }
            if machine.wantsTurn {
                machine.takeTurn(now: 0, io: &io)
            } else if machine.wantsRead, let piece = pieces.first {
                pieces.removeFirst()
                unread.withUnsafeBytes { machine.received(UnsafeRawBufferPointer(rebasing: $0[piece]), now: 0, io: &io) }
            } else if !(io.mail.files.isEmpty && !io.mail.closeRequested && io.mailbox.isEmpty)
                || (machine.wantsWrite && io.room != 0)
            {
                // Woken by mail, or writable.
            } else {
                return
            }
            machine.flush(now: 0, io: &io)
        }
        Issue.record("the machine never settled")
    }

    var lines: [String] { io.lines }
}

@Suite("Files: names, catalog, quota")
struct FileCatalogTests {
    @Test func namesFollowTheCharacterSet() {
        for name in ["a", "a.txt", "A-b_c.9", String(repeating: "x", count: 100), "a..b", "x."] {
            #expect(FileName.isValid(name), "\(name)")
        }
        for name in ["", ".hidden", "../x", "a/b", "a b", String(repeating: "x", count: 101), "é", ".upload-1", "a\u{0}"] {
            #expect(!FileName.isValid(name), "\(name)")
        }
    }

    @Test func aTakenNameGetsItsNumberBeforeTheLastDot() {
        #expect(FileName.numbered("notes.txt", 2) == "notes-2.txt")
        #expect(FileName.numbered("README", 3) == "README-3")
        #expect(FileName.numbered("a.tar.gz", 2) == "a.tar-2.gz")
        #expect(FileName.numbered("x.", 2) == "x-2.")
        #expect(FileName.numbered(String(repeating: "x", count: 99), 2) == nil)  // 101 bytes
    }

    @Test func claimsNumberCollisionsAndKeepsTheQuota() {
        var catalog = FileCatalog([.init(name: "a.txt", size: 10), .init(name: ".skip", size: 5)])
        #expect(catalog.count == 1 && catalog.storedBytes == 10)
        let first = catalog.reserve(80, quota: 100)
        let second = catalog.reserve(11, quota: 100)  // 10 stored + 80 promised + 11 > 100
        #expect(first && !second)
        let claimed = catalog.claim("a.txt", size: 30, avoiding: [])
        let numbered = catalog.claim("a.txt", size: 30, avoiding: ["a-3.txt"])
        #expect(claimed == "a-2.txt" && numbered == "a-4.txt")
        #expect(catalog.storedBytes == 70 && catalog.reservedBytes == 20)
        catalog.release(20)
        #expect(catalog.reservedBytes == 0)
        #expect(catalog.sorted.map(\.name) == ["a-2.txt", "a-4.txt", "a.txt"])
        catalog.unclaim("a-4.txt")
        #expect(catalog.storedBytes == 40 && catalog.reservedBytes == 30 && catalog.size(of: "a-4.txt") == nil)
    }

    /// Files deleted from the directory by hand: unlisted, their bytes free
    /// for the quota again; what is promised to uploads under way stays.
    @Test func filesGoneFromTheDirectoryAreForgotten() {
        var catalog = FileCatalog([.init(name: "a", size: 10), .init(name: "b", size: 20), .init(name: "c", size: 30)])
        let reserved = catalog.reserve(5, quota: 100)
        let forgotten = [catalog.forget("b"), catalog.forget("b"), catalog.forget("never")]
        #expect(reserved && forgotten == [true, false, false])
        #expect(catalog.sorted.map(\.name) == ["a", "c"] && catalog.storedBytes == 40)
        let gone = catalog.keep(only: ["c", "new"])
        #expect(gone == 1)
        #expect(catalog.sorted.map(\.name) == ["c"] && catalog.storedBytes == 30 && catalog.reservedBytes == 5)
        let fits = [catalog.reserve(65, quota: 100), catalog.reserve(1, quota: 100)]
        #expect(fits == [true, false])
    }

    @Test func listsAreSortedIgnoringCase() {
        let catalog = FileCatalog([.init(name: "b", size: 1), .init(name: "A", size: 2), .init(name: "a", size: 3)])
        #expect(catalog.sorted.map(\.name) == ["A", "a", "b"])
        #expect(text(Replies.files(catalog.sorted)) == "* files: A (2), a (3), b (1)\n")
        #expect(text(Replies.files([])) == "* files: none\n")
    }
}

@Suite("Files: framing in the connection machine")
struct FileFramingTests {
    /// Content that looks like lines and commands, and every byte the line
    /// cleaning would remove: raw bytes are stored as they are.
    static let payload: [UInt8] = bytes("x\n/quit\n") + [0, 0x0D, 0x0A, 0xFF, 0x80, 0x1B] + bytes("/files\n")

    static var session: [UInt8] {
        bytes("/upload a.txt \(payload.count)\n") + payload + bytes("/files\n/download a.txt\n/who\n")
    }

    static func expected(_ digest: String) -> [UInt8] {
        bytes("* welcome guest1, you are in #lobby (1 here); /help lists commands\n")
            + bytes("* stored a.txt (\(payload.count) bytes, sha256 \(digest))\n")
            + bytes("* files: a.txt (\(payload.count))\n")
            + bytes("* sending a.txt \(payload.count) sha256 \(digest)\n") + payload
            + bytes("* #lobby: guest1 (1)\n")
    }

    @Test(arguments: Chunking.all(forLength: FileFramingTests.session.count))
    func anUploadAndADownloadAreTheSameBytesWhateverTheChunking(chunking: Chunking) {
        var driver = Driver(chunking: chunking)
        driver.send(Self.session)
        #expect(driver.io.files == ["a.txt": Self.payload])
        #expect(driver.io.written == Self.expected(FakeIO.digest(Self.payload)), "\(chunking)")
        #expect(!driver.machine.isClosed && !driver.machine.isTransferring)
        #expect(driver.io.fileCalls == ["begin a.txt \(Self.payload.count)", "end", "download a.txt", "download end"])
    }

    @Test(arguments: Chunking.standard)
    func everyRefusalConsumesExactlyItsBytes(chunking: Chunking) {
        var driver = Driver(sharing: FileSharing(maxUpload: 10, quota: 15), chunking: chunking)
        let script =
            "/upload a\n"  // usage: nothing consumed, the next line is a line
            + "/upload a 1x\n"  // usage
            + "/upload ../x 3\n/wh" + "/upload .hidden 2\nab" + "/upload a/b 1\n!" + "/upload \(String(repeating: "n", count: 101)) 1\n?"
            + "/upload big 11\n0123456789A" + "/upload ok 10\n0123456789" + "/upload full 6\n/who\n/"
            + "/download\n/download nope\n/download ../x\n/files\n"
        driver.send(bytes(script))
        #expect(Array(driver.lines.dropFirst()) == [
            "! usage: /upload NAME SIZE", "! usage: /upload NAME SIZE",
            "! invalid file name: ../x", "! invalid file name: .hidden", "! invalid file name: a/b",
            "! invalid file name: \(String(repeating: "n", count: 101))",
            "! file too large (max 10 bytes)",
            "* stored ok (10 bytes, sha256 \(FakeIO.digest(bytes("0123456789"))))",
            "! server storage full",
            "! usage: /download NAME", "! no such file: nope", "! no such file: ../x",
            "* files: ok (10)",
        ])
        #expect(driver.io.files.keys.sorted() == ["ok"])
    }

    @Test(arguments: Chunking.standard)
    func withSharingOffAnUploadStillConsumesItsBytes(chunking: Chunking) {
        var driver = Driver(sharing: nil, chunking: chunking)
        driver.send(bytes("/upload a 8\n/quit\nxx/files\n/download a\n/upload a\n/who\n"))
        #expect(Array(driver.lines.dropFirst()) == [
            "! file sharing is off on this server", "! file sharing is off on this server",
            "! file sharing is off on this server", "! usage: /upload NAME SIZE", "* #lobby: guest1 (1)",
        ])
        #expect(driver.io.fileCalls.isEmpty)
    }

    @Test func anEmptyFileIsStoredAndSent() {
        var driver = Driver(chunking: .whole)
        driver.send(bytes("/upload empty 0\n/download empty\n/who\n"))
        let digest = FakeIO.digest([])
        #expect(Array(driver.lines.dropFirst()) == [
            "* stored empty (0 bytes, sha256 \(digest))", "* sending empty 0 sha256 \(digest)", "* #lobby: guest1 (1)",
        ])
    }

    @Test func aConnectionThatEndsMidUploadLeavesNothingAndFreesTheQuota() {
        var driver = Driver(chunking: .byteByByte)
        driver.send(bytes("/upload a 10\nabc"))
        #expect(driver.io.core!.catalog.reservedBytes == 10)
        driver.machine.endOfInput(now: 0, io: &driver.io)
        driver.settle()
        #expect(driver.io.fileCalls == ["begin a 10", "abort"])
        #expect(driver.io.files.isEmpty)
        #expect(driver.io.core!.catalog.reservedBytes == 0)
        #expect(driver.machine.isClosed)
    }

    @Test(arguments: Chunking.standard)
    func aDiskErrorEndsTheUploadAndTheRestIsStillConsumed(chunking: Chunking) {
        var driver = Driver(chunking: chunking)
        driver.io.failUploadAfter = 3
        driver.send(bytes("/upload a 10\n0123456789/who\n"))
        #expect(Array(driver.lines.dropFirst()) == ["! upload failed: No space left on device", "* #lobby: guest1 (1)"])
        #expect(driver.io.files.isEmpty)
        #expect(driver.io.core!.catalog.reservedBytes == 0)
    }

    /// A kernel that takes every piece at once leaves nothing to write, so
    /// no writability wakes the connection: the machine must ask for the next
    /// piece itself, or the download stops.
    @Test func aDownloadOfManyPiecesFlowsWhenTheKernelTakesEverything() {
        let content = (0..<(5 * Limits.downloadChunk + 17)).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        var driver = Driver(
            sharing: FileSharing(maxUpload: 1 << 20, quota: 1 << 20), catalog: FileCatalog([.init(name: "f", size: content.count)]),
            chunking: .whole)
        driver.io.files["f"] = content
        driver.send(bytes("/download f\n/who\n"))
        #expect(!driver.machine.isTransferring, "the download stalled")
        let header = bytes("* sending f \(content.count) sha256 \(FakeIO.digest(content))\n")
        let same = driver.io.written.suffix(header.count + content.count + 21) == ArraySlice(header + content + bytes("* #lobby: guest1 (1)\n"))
        #expect(same, "\(driver.io.written.count) bytes written")
    }

    @Test func linesThatArriveDuringADownloadWaitForItsEnd() {
        let content = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        var driver = Driver(
            sharing: FileSharing(maxUpload: 1 << 20, quota: 1 << 20), catalog: FileCatalog([.init(name: "big", size: content.count)]),
            chunking: .whole)
        driver.io.files["big"] = content
        driver.io.room = 1000  // the kernel takes little at a time
        driver.send(bytes("/download big\n"))
        #expect(!driver.io.written.isEmpty)
        #expect(driver.machine.isTransferring)
        // Another client speaks in the room meanwhile.
        driver.io.core!.connect(ConnectionID(2), output: driver.io)
        let io = driver.io
        bytes("hello\n").withUnsafeBytes { _ = io.core!.receive($0, from: ConnectionID(2), output: io) }
        #expect(driver.machine.queuedLineBytes < 1000, "the download's content is not counted as queued lines")
        for _ in 0..<10_000 where driver.machine.isTransferring {
            driver.io.room = 64 * 1024
            driver.settle()
        }
        driver.io.room = nil
        driver.settle()
        let header = bytes("* sending big \(content.count) sha256 \(FakeIO.digest(content))\n")
        let welcome = bytes("* welcome guest1, you are in #lobby (1 here); /help lists commands\n")
        let after = bytes("* guest2 joined #lobby\n<guest2> hello\n")
        let expected = welcome + header + content + after
        let differs = driver.io.written.indices.first { $0 < expected.count && driver.io.written[$0] != expected[$0] } ?? min(driver.io.written.count, expected.count)
        let same = driver.io.written == expected  // no array dump on failure: 200 KB
        #expect(same, "\(driver.io.written.count) bytes written, \(expected.count) expected; first difference at \(differs)")
        #expect(driver.io.fileCalls.first == "download big" && driver.io.fileCalls.last == "download end")
    }
}
