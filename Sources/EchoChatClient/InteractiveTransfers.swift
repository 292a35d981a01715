import EchoChatCore
import EchoChatPOSIX

/// File transfers in the interactive client, beside the chat: `/upload PATH
/// [NAME]` is handled here (the file goes out in pieces as the socket takes
/// them, so the screen never waits), `/download NAME` goes to the server as
/// typed and its content, announced by `* sending`, is taken out of the
/// stream and saved. Progress is shown in front of the prompt; the outcome
/// (hash matched or not, where the file was saved) as a client line.
///
/// Owned by the session's thread, like the screen it draws on.
final class InteractiveTransfers {
    private let downloadDirectory: String
    private var reader = ServerReader()
    /// The upload whose bytes are going out now.
    private var upload: UploadSource?
    /// Uploads sent (or being sent) whose `* stored` or refusal has not come yet, oldest first.
    private var awaiting: [UploadSource] = []
    /// Lines typed while an upload's bytes go out: they follow the content.
    private var afterUpload = ByteQueue()
    private var download: DownloadSink?
    private var downloadName = ""
    private var shownStatus: String?

    init(downloadDirectory: String) {
        self.downloadDirectory = downloadDirectory
    }

    /// Bytes typed but held back until the current upload has gone.
    var heldBack: Int { afterUpload.count }
    var isUploading: Bool { upload != nil }

    /// A line the user submitted (with its LF): a local `/upload`, or bytes
    /// for the server, queued after any upload in progress.
    func typed(_ line: [UInt8], screen: inout TerminalScreen, outgoing: inout ByteQueue) -> String {
        var text = String(decoding: line.dropLast(), as: UTF8.self)
        if text.hasSuffix("\r") { text.removeLast() }
        if text == "/upload" || text.hasPrefix("/upload ") {
            return startUpload(text, screen: &screen, outgoing: &outgoing)
        }
        if text.hasPrefix("/download ") { reader.downloadsExpected += 1 }
        if upload != nil { afterUpload.append(line) } else { outgoing.append(line) }
        return ""
    }

    private func startUpload(_ text: String, screen: inout TerminalScreen, outgoing: inout ByteQueue) -> String {
        let words = text.split(separator: " ").dropFirst().map(String.init)
        guard (1...2).contains(words.count) else {
            return screen.note("echochat: usage: /upload PATH [NAME] (a PATH with spaces: use --upload)")
        }
        if let upload {
            return screen.note("echochat: \(upload.name) is still being sent: one upload at a time")
        }
        let name = words.count == 2 ? words[1] : FileNames.lastComponent(words[0])
        do {
            let source = try UploadSource(path: words[0], name: name)
            outgoing.append(source.command)
            upload = source
            awaiting.append(source)
            return status(&screen)
        } catch {
            return screen.note("echochat: \(error)")
        }
    }

    /// Before the session waits: more of the upload into `outgoing`, up to
    /// `limit` queued. An error here is fatal to the connection: the server
    /// expects exactly SIZE bytes, and anything else would be read as content.
    func fill(_ outgoing: inout ByteQueue, limit: Int, screen: inout TerminalScreen) throws(TransferError) -> String {
        guard let source = upload else { return "" }
        while outgoing.count < limit && !source.isDone { try source.fill(&outgoing) }
        if source.isDone {
            upload = nil
            afterUpload.withReadableBytes { outgoing.append($0) }
            afterUpload.removeAll()
        }
        return status(&screen)
    }

    /// Bytes from the server: lines for the screen, download content to its file.
    func received(_ bytes: UnsafeRawBufferPointer, screen: inout TerminalScreen) -> String {
        var text = ""
        reader.feed(bytes) { event in
            switch event {
            case .line(let line):
                text += screen.received(line + [0x0A])
                text += serverLine(line, screen: &screen)
            case .contentStart(let name, let size, let sha256):
                downloadName = name
                do {
                    download = try DownloadSink(directory: downloadDirectory, name: name, size: size, sha256: sha256)
                } catch {
                    text += screen.note("echochat: \(error) (its content is skipped)")
                }
                text += status(&screen)
            case .content(let piece):
                guard let sink = download else { return }
                do {
                    try sink.write(piece)
                } catch {
                    download = nil
                    text += screen.note("echochat: \(error) (the rest is skipped)")
                }
                text += status(&screen)
            case .contentEnd:
                guard let sink = download else { return }
                download = nil
                do {
                    let path = try sink.finish()
                    text += screen.note("echochat: saved \(path) (\(sink.size) bytes, sha256 verified)")
                } catch {
                    text += screen.note("echochat: \(error)")
                }
                text += status(&screen)
            }
        }
        return text
    }

    /// A `* stored` or a refusal ends the oldest upload awaiting its reply.
    private func serverLine(_ line: [UInt8], screen: inout TerminalScreen) -> String {
        guard !awaiting.isEmpty else { return "" }
        var text = String(decoding: line, as: UTF8.self)
        if text.hasSuffix("\r") { text.removeLast() }
        switch FileReply(text) {
        case .stored(_, let size, let sha256):
            let source = awaiting.removeFirst()
            if size == source.size && sha256 == source.sha256 {
                return screen.note("echochat: sha256 matches what was sent")
            }
            return screen.note("echochat: MISMATCH: sent \(source.size) bytes, sha256 \(source.sha256)")
        case .refused(let refusal)
        where !refusal.hasPrefix("! no such file: ") && !refusal.hasPrefix("! usage: /download")
            && !refusal.hasPrefix("! unknown command: /download"):
            awaiting.removeFirst()
            return ""
        default:
            return ""
        }
    }

    /// The prompt's status: what is being sent or received, in percent.
    private func status(_ screen: inout TerminalScreen) -> String {
        var parts: [String] = []
        if let upload {
            parts.append("upload \(upload.name) \(TransferProgress.step(done: upload.sent, total: upload.size))%")
        }
        if let download {
            parts.append("download \(downloadName) \(TransferProgress.step(done: download.received, total: download.size))%")
        }
        let status = parts.isEmpty ? nil : parts.joined(separator: ", ")
        guard status != shownStatus else { return "" }
        shownStatus = status
        return screen.status(status)
    }

    /// On the way out: a download cut short leaves no file behind.
    func abandon() {
        download?.abort()
        download = nil
    }
}
