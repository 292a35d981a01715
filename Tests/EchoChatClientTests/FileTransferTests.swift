import EchoChatClient
import EchoChatOptions
import Testing

/// The client's pure file-sharing parts, in memory: the server's replies,
/// file names and `-2` numbering, the reader's switch to raw content and
/// back, the options.
@Suite("File transfer, in memory")
struct FileTransferTests {
    static let hex = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

    // MARK: - Replies

    @Test func parsesStoredAndSending() {
        #expect(FileReply("* stored notes-2.txt (12 bytes, sha256 \(Self.hex))") == .stored(name: "notes-2.txt", size: 12, sha256: Self.hex))
        #expect(FileReply("* sending a.bin 0 sha256 \(Self.hex)") == .sending(name: "a.bin", size: 0, sha256: Self.hex))
        #expect(FileReply("* sending a.bin 16777216 sha256 \(Self.hex)") == .sending(name: "a.bin", size: 16_777_216, sha256: Self.hex))
    }

    @Test(arguments: [
        "* stored a (12 bytes, sha256 \(hex)) extra",
        "* stored a (12 bytes, sha256 \(hex.uppercased()))",
        "* stored a (x bytes, sha256 \(hex))",
        "* stored a (12 bytes, sha256 \(hex.dropLast()))",
        "* sending a 12 sha256",
        "* sending a -1 sha256 \(hex)",
        "* sending a 1234567890123456789 sha256 \(hex)",
        "* sending .hidden 1 sha256 \(hex)",
        "* sending a 1 md5 \(hex)",
        "<bob> * sending a 1 sha256 \(hex)",
        "* alice shared a.txt (12 bytes)",
        "* welcome guest1, you are in #lobby (1 here); /help lists commands",
        "! nick taken: bob",
    ])
    func otherLinesAreNotReplies(line: String) {
        #expect(FileReply(line) == nil)
    }

    @Test(arguments: [
        "! no such file: x", "! file sharing is off on this server", "! invalid file name: ../x",
        "! file too large (max 16777216 bytes)", "! server storage full", "! upload failed: No space left on device",
        "! usage: /upload NAME SIZE", "! usage: /download NAME",
    ])
    func refusalsEndATransfer(line: String) {
        #expect(FileReply(line) == .refused(line))
    }

    // MARK: - Names

    @Test func namesFollowTheCharacterSet() {
        #expect(FileNames.isValid("a.txt") && FileNames.isValid("A_b-9") && FileNames.isValid(String(repeating: "x", count: 100)))
        for bad in ["", ".hidden", "../x", "a/b", "a b", "é", "a\n", String(repeating: "x", count: 101)] {
            #expect(!FileNames.isValid(bad), "\(bad.debugDescription)")
        }
    }

    @Test func takenNamesAreNumberedBeforeTheLastDot() {
        #expect(FileNames.numbered("notes.txt", 1) == "notes.txt")
        #expect(FileNames.numbered("notes.txt", 2) == "notes-2.txt")
        #expect(FileNames.numbered("a.tar.gz", 3) == "a.tar-3.gz")
        #expect(FileNames.numbered("README", 2) == "README-2")
        #expect(FileNames.numbered("a.", 2) == "a-2.")
        let taken: Set = ["a.txt", "a-2.txt", "a-3.txt"]
        #expect(FileNames.firstFree("a.txt") { taken.contains($0) } == "a-4.txt")
        #expect(FileNames.firstFree("b.txt") { taken.contains($0) } == "b.txt")
    }

    @Test func anUploadIsNamedAfterItsPathsLastComponent() {
        #expect(FileNames.lastComponent("/tmp/x/a.txt") == "a.txt")
        #expect(FileNames.lastComponent("a.txt") == "a.txt")
        #expect(FileNames.lastComponent("dir/") == "dir")
    }

    // MARK: - Reader

    /// What a reader reported, copied out of the callback.
    enum Seen: Equatable {
        case line(String), start(String, Int), content([UInt8]), end
    }

    /// Feeds `input` in pieces of `piece` bytes (0: whole), joining adjacent content.
    static func read(_ input: [UInt8], piece: Int, downloads: Int = 1) -> (seen: [Seen], reader: ServerReader) {
        var reader = ServerReader()
        reader.downloadsExpected = downloads
        var seen: [Seen] = []
        let size = piece == 0 ? max(1, input.count) : piece
        input.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let end = min(raw.count, offset + size)
                reader.feed(UnsafeRawBufferPointer(rebasing: raw[offset..<end])) { event in
                    switch event {
                    case .line(let bytes): seen.append(.line(String(decoding: bytes, as: UTF8.self)))
                    case .contentStart(let name, let size, _): seen.append(.start(name, size))
                    case .content(let bytes):
                        if case .content(let before) = seen.last {
                            seen[seen.count - 1] = .content(before + Array(bytes))
                        } else {
                            seen.append(.content(Array(bytes)))
                        }
                    case .contentEnd: seen.append(.end)
                    }
                }
                offset = end
            }
        }
        return (seen, reader)
    }

    /// Content with LFs, NUL, CR, high bytes and a `/quit` line inside is
    /// counted, not framed; lines resume right after it.
    @Test(arguments: [0, 1, 2, 3, 7, 64])
    func contentAfterSendingIsRawAndLinesResume(piece: Int) {
        let content: [UInt8] = Array("x\n/quit\n".utf8) + [0, 0x0D, 0xFF, 0x80, 0x0A]
        let input = Array("* welcome guest1\n* sending f.bin \(content.count) sha256 \(Self.hex)\n".utf8) + content
            + Array("<bob> hi\n".utf8)
        let (seen, reader) = Self.read(input, piece: piece)
        #expect(
            seen == [
                .line("* welcome guest1"), .line("* sending f.bin \(content.count) sha256 \(Self.hex)"), .start("f.bin", content.count),
                .content(content), .end, .line("<bob> hi"),
            ])
        #expect(!reader.inContent && reader.downloadsExpected == 0)
    }

    @Test func emptyContentStartsAndEndsAtOnce() {
        let (seen, _) = Self.read(Array("* sending e 0 sha256 \(Self.hex)\nnext\n".utf8), piece: 1)
        #expect(seen == [.line("* sending e 0 sha256 \(Self.hex)"), .start("e", 0), .end, .line("next")])
    }

    /// Without a `/download` sent, a `* sending` line is just a line.
    @Test func sendingWithoutADownloadExpectedIsALine() {
        let (seen, _) = Self.read(Array("* sending f 3 sha256 \(Self.hex)\nabc\n".utf8), piece: 0, downloads: 0)
        #expect(seen == [.line("* sending f 3 sha256 \(Self.hex)"), .line("abc")])
    }

    @Test func noSuchFileAnswersADownload() {
        let (seen, reader) = Self.read(Array("! no such file: f\n".utf8), piece: 0)
        #expect(seen == [.line("! no such file: f")])
        #expect(reader.downloadsExpected == 0)
    }

    @Test func contentCountsAcrossPieces() {
        var reader = ServerReader()
        reader.downloadsExpected = 1
        var total = 0
        Array("* sending f 10 sha256 \(Self.hex)\n0123".utf8).withUnsafeBytes { reader.feed($0) { _ in } }
        #expect(reader.inContent && reader.contentRemaining == 6)
        Array("456789rest".utf8).withUnsafeBytes {
            reader.feed($0) { event in if case .content(let bytes) = event { total += bytes.count } }
        }
        #expect(total == 6 && !reader.inContent && reader.contentRemaining == 0)
    }

    @Test func aLineThatNeverEndsIsHandedOverAtTheLimit() {
        let (seen, _) = Self.read([UInt8](repeating: 0x61, count: ServerReader.maxLine + 10), piece: 1000)
        #expect(seen.count == 1)
    }

    // MARK: - Progress

    @Test func progressInPercentAndMebibytes() {
        #expect(TransferProgress.text("upload", "a.bin", done: 7 << 20, total: 16 << 20) == "upload a.bin: 43% (7.0 of 16.0 MiB)")
        #expect(TransferProgress.step(done: 0, total: 0) == 100)
    }

    // MARK: - The screen

    @Test func statusShowsInFrontOfThePromptAndGoesAway() {
        var screen = TerminalScreen(width: 80, colors: false)
        _ = screen.start()
        _ = screen.typed(Array("hi".utf8))
        #expect(screen.status("upload a.bin 5%") == "\r[upload a.bin 5%] > hi\u{1B}[K\r\u{1B}[22C")
        #expect(screen.status("upload a.bin 5%") == "", "unchanged: nothing drawn")
        #expect(screen.status(nil) == "\r> hi\u{1B}[K\r\u{1B}[4C")
        #expect(screen.note("echochat: saved ./a.bin") == "\r\u{1B}[Kechochat: saved ./a.bin\r\n\r> hi\u{1B}[K\r\u{1B}[4C")
    }

    // MARK: - Options

    @Test func transferOptions() throws {
        guard case .run(let upload) = try ClientOptions.parse(["--upload", "/tmp/a.txt"]) else { throw OptionsFailure() }
        #expect(upload.transfer == .upload(path: "/tmp/a.txt", name: "a.txt"))
        guard case .run(let renamed) = try ClientOptions.parse(["--upload", "/tmp/a b", "--as", "b.txt"]) else { throw OptionsFailure() }
        #expect(renamed.transfer == .upload(path: "/tmp/a b", name: "b.txt"))
        guard case .run(let download) = try ClientOptions.parse(["--download", "a.txt", "--download-dir", "/tmp"]) else {
            throw OptionsFailure()
        }
        #expect(download.transfer == .download(name: "a.txt") && download.downloadDirectory == "/tmp")
        guard case .run(let chat) = try ClientOptions.parse([]) else { throw OptionsFailure() }
        #expect(chat.transfer == nil && chat.downloadDirectory == ".")
    }

    @Test(arguments: [
        ["--download", "../x"], ["--download", ".hidden"], ["--as", "a.txt"], ["--upload", "a", "--download", "b"],
        ["--upload", "/tmp/a b"], ["--upload", "x", "--as", "a/b"],
    ])
    func badTransferOptionsAreUsageErrors(arguments: [String]) {
        #expect(throws: UsageError.self) { try ClientOptions.parse(arguments) }
    }

    @Test func helpNamesTheTransferOptions() {
        for flag in ["--upload <path>", "--as <name>", "--download <name>", "--download-dir <dir>", "/upload PATH [NAME]"] {
            #expect(ClientOptions.helpText.contains(flag), "\(flag)")
        }
    }

    struct OptionsFailure: Error {}
}
