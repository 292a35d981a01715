import EchoChatCore
import EchoChatPOSIX

/// `echochat --upload PATH [--as NAME]` and `echochat --download NAME`: one
/// transfer on one connection, then exit 0 when it was verified, 1 otherwise.
///
/// One thread, one poll(2) loop over the socket: the file goes out as the
/// kernel takes it (at most `maxQueued` bytes read ahead), while the server
/// is read all the time, so chat arriving meanwhile can never block it.
/// Lines before the reply (welcome, joins, chat) are skipped; stdout gets one
/// line on success, stderr the reason on failure.
final class ScriptedTransfer {
    static let maxQueued = 256 * 1024
    /// How long the server may stay silent while nothing is being sent (an
    /// echo server, or one that never answers) before the transfer fails.
    static let idleTimeout: Int64 = 30_000_000_000

    private let socket: Socket
    private let peer: String
    private let showProgress: Bool
    private var outgoing = ByteQueue()
    private var reader = ServerReader()
    private var buffer = [UInt8](repeating: 0, count: 64 * 1024)
    private var sendFailed = false
    private var lastStep = -1

    init(socket: Socket, peer: String, greeting: [UInt8], showProgress: Bool) {
        self.socket = socket
        self.peer = peer
        self.showProgress = showProgress
        outgoing.append(greeting)
    }

    /// What one turn of the loop concluded.
    private enum Outcome {
        case success(String)
        case failure(String)
    }

    func upload(path: String, name: String) -> Int32 {
        let source: UploadSource
        do {
            source = try UploadSource(path: path, name: name)
        } catch {
            return finish(.failure("Error: \(error)"))
        }
        outgoing.append(source.command)
        return run(
            moreToSend: { !source.isDone },
            fill: { (queue: inout ByteQueue) throws(TransferError) in
                while queue.count < Self.maxQueued && !source.isDone { try source.fill(&queue) }
                self.progress("upload", source.name, done: source.sent, total: source.size)
            },
            line: { text in
                switch FileReply(text) {
                case .stored(let stored, let size, let sha256):
                    guard source.isDone else { return nil }
                    let summary = "\(stored) (\(size) bytes, sha256 \(sha256))"
                    guard size == source.size, sha256 == source.sha256 else {
                        return .failure(
                            "Error: the server stored \(summary), but what was sent is \(source.size) bytes, sha256 \(source.sha256)")
                    }
                    return .success("stored \(summary)\n")
                case .refused(let refusal):
                    return .failure("Error: the server refused the upload: \(refusal)")
                default:
                    return nil
                }
            },
            content: { _ throws(TransferError) in nil })
    }

    func download(name: String, directory: String) -> Int32 {
        guard System.isDirectory(directory) else {
            return finish(.failure("Error: cannot save in \(directory): not a directory"))
        }
        outgoing.append(Array("/download \(name)\n".utf8))
        reader.downloadsExpected = 1
        var sink: DownloadSink?
        defer { sink?.abort() }
        return run(
            fill: { _ throws(TransferError) in },
            line: { text in
                if case .refused(let refusal) = FileReply(text) {
                    return .failure("Error: the server refused the download: \(refusal)")
                }
                return nil
            },
            content: { event throws(TransferError) in
                switch event {
                case .contentStart(let announced, let size, let sha256):
                    guard announced == name else {
                        throw TransferError("the server sent \(announced), not \(name)")
                    }
                    sink = try DownloadSink(directory: directory, name: name, size: size, sha256: sha256)
                case .content(let bytes):
                    guard let sink else { return nil }
                    try sink.write(bytes)
                    self.progress("download", name, done: sink.received, total: sink.size)
                case .contentEnd:
                    guard let done = sink else { return nil }
                    sink = nil
                    let path = try done.finish()
                    return .success("saved \(path) (\(done.size) bytes, sha256 \(done.expected))\n")
                case .line:
                    break
                }
                return nil
            })
    }

    /// The loop: send what `fill` queues, read and frame what comes back,
    /// until `line` or `content` concludes (or the connection ends).
    private func run(
        moreToSend: () -> Bool = { false },
        fill: (inout ByteQueue) throws(TransferError) -> Void,
        line: (String) -> Outcome?,
        content: (ServerReader.Event) throws(TransferError) -> Outcome?
    ) -> Int32 {
        var lastActivity = Clock.monotonicNanoseconds()
        do {
            while true {
                if !sendFailed { try fill(&outgoing) }
                try flush()
                // Writable while an upload has bytes left, even with the
                // queue empty: the next turn refills it.
                let writable = !sendFailed && (!outgoing.isEmpty || moreToSend())
                let ready = try Poll.wait(
                    [Poll.Interest(socket.descriptor, readable: true, writable: writable)], timeoutMilliseconds: 1000)
                guard let readiness = ready.first, readiness.readable || readiness.writable || readiness.failed else {
                    if Clock.monotonicNanoseconds() - lastActivity > Self.idleTimeout {
                        return finish(.failure("Error: no reply from \(peer) in \(Self.idleTimeout / 1_000_000_000) s"))
                    }
                    continue
                }
                lastActivity = Clock.monotonicNanoseconds()
                if readiness.writable { try flush() }
                guard readiness.readable || readiness.failed else { continue }
                let socket = socket
                let result = try buffer.withUnsafeMutableBytes { raw in
                    Result { () throws(SystemError) in try socket.read(into: raw) }
                }.get()
                switch result {
                case .wouldBlock:
                    continue
                case .endOfFile:
                    return finish(.failure("Error: connection to \(peer) closed by the server before the transfer was done"))
                case .bytes(let count):
                    var outcome: Outcome?
                    var failure: TransferError?
                    buffer.withUnsafeBytes { raw in
                        reader.feed(UnsafeRawBufferPointer(rebasing: raw[..<count])) { event in
                            guard outcome == nil, failure == nil else { return }
                            do throws(TransferError) {
                                if case .line(let bytes) = event {
                                    var text = String(decoding: bytes, as: UTF8.self)
                                    if text.hasSuffix("\r") { text.removeLast() }
                                    outcome = line(text)
                                } else {
                                    outcome = try content(event)
                                }
                            } catch {
                                failure = error
                            }
                        }
                    }
                    if let failure { return finish(.failure("Error: \(failure)")) }
                    if let outcome { return finish(outcome) }
                }
            }
        } catch let error as TransferError {
            return finish(.failure("Error: \(error)"))
        } catch let error as SystemError {
            return finish(.failure("Error: connection to \(peer) lost: \(error.errno)"))
        } catch {
            return finish(.failure("Error: \(error)"))
        }
    }

    /// Sends what the kernel takes now. A failed send (the server closed or
    /// reset) stops sending; the server's last words are still read.
    private func flush() throws(SystemError) {
        if !sendFailed && !outgoing.send(to: socket) { sendFailed = true }
    }

    private func progress(_ verb: String, _ name: String, done: Int, total: Int) {
        guard showProgress else { return }
        let step = TransferProgress.step(done: done, total: total)
        guard step != lastStep else { return }
        lastStep = step
        System.writeToStandardError("\r\u{1B}[K" + TransferProgress.text(verb, name, done: done, total: total))
    }

    private func finish(_ outcome: Outcome) -> Int32 {
        if showProgress && lastStep >= 0 { System.writeToStandardError("\r\u{1B}[K") }
        switch outcome {
        case .success(let text):
            System.writeToStandardOutput(text)
            return 0
        case .failure(let text):
            System.writeToStandardError(text + "\n")
            return 1
        }
    }
}
