import EchoChatCore
import EchoChatPOSIX

/// What one upload client hands back at the end.
final class UploadResult {
    var connected = 0
    var connectFailed = 0
    let connectLatency = Histogram()
    /// From the first byte of `/upload` sent to `* stored` read.
    let uploadLatency = Histogram()
    /// From `/download` sent to the last byte of the content read.
    let downloadLatency = Histogram()
    var uploads = 0
    var uploadBytes = 0
    var downloads = 0
    var downloadBytes = 0
    /// `* stored` or `* sending` whose SHA-256 is not this client's own.
    var hashMismatches = 0
    /// Downloads with a byte (or a size) that differs from what was uploaded.
    var byteMismatches = 0
    /// Answers that do not follow §5: `* stored` before the last byte, a
    /// wrong size or name, a malformed `* sending`.
    var protocolErrors = 0
    /// `! ` lines: refusals and failures.
    var refused = 0
    var unexpectedCloses = 0
    /// Transfers that made no progress for `--timeout` seconds.
    var stalls = 0
    /// Files stored whose download never completed.
    var lost = 0
}

/// `echochat-load --mode upload`: C clients, one thread each (a blocking-free
/// loop over one non-blocking socket: the client reads whatever the server
/// says while it sends, so a refusal or a chat notice never deadlocks it).
/// Phases, all clients in step: connect and read the welcome; upload
/// (`--messages` files each, or new files until `--duration` has passed);
/// download every file stored, in turn. Upload and download rates are each
/// over their own phase.
public enum UploadRunner {
    public static let defaultSize = 1 << 20
    public static let maximumClients = 1000
    /// `/upload` takes a size of up to 18 digits; beyond a TiB a load run makes no sense.
    public static let maximumSize = 1 << 40

    /// A prefix no earlier run has used: the pid and the clock, in base 36.
    static func namePrefix(seed: UInt64) -> String {
        "load" + String(System.processID, radix: 36) + "x" + String(seed % (1 << 40), radix: 36)
    }

    /// `onUploadsStart` is called when the upload phase begins (the bench
    /// starts its chat measurement then).
    public static func run(
        _ options: LoadOptions, progress: Bool = false, interruption: Interruption = Interruption(),
        onUploadsStart: (@Sendable () -> Void)? = nil
    ) throws(LoadRunError) -> LoadReport {
        Signals.ignoreBrokenPipe()
        let address = try LoadRunner.resolve(host: options.host, port: options.port)
        let clients = options.connections
        let limit = System.openFileLimit()
        if limit.soft < clients + 64 {
            guard limit.hard >= clients + 64 else {
                throw LoadRunError("\(clients) clients need about \(clients + 64) file descriptors; the hard limit is \(limit.hard)")
            }
            try? System.setOpenFileLimit(soft: limit.hard)
        }
        let seed = UInt64(truncatingIfNeeded: Clock.monotonicNanoseconds()) ^ (UInt64(System.processID) << 40)
        let prefix = namePrefix(seed: FileContent.mix(seed))
        let control = RunControl(
            options: options, addresses: [address], perSource: nil, pattern: nil, workers: clients, onHolding: nil,
            interruption: interruption)
        let notes = ProblemNotes()
        let began = Clock.monotonicNanoseconds()
        var handles: [ThreadHandle] = []
        for id in 0..<clients {
            do {
                handles.append(try Threads.spawn(name: "upload-\(id)", stackSize: 256 * 1024) {
                    let client = UploadClient(id: id, control: control, runSeed: seed, prefix: prefix, notes: notes)
                    client.run()
                })
            } catch {
                System.writeToStandardError("echochat-load: cannot start client threads: \(error)\n")
                System.exit(1)
            }
        }
        let phaseDeadline = { Clock.monotonicNanoseconds() + Int64((options.timeout + 60) * 1e9) }
        _ = control.waitForArrivals(deadline: phaseDeadline())
        let connectSeconds = Double(Clock.monotonicNanoseconds() - began) / 1e9

        // Uploads.
        let start = Clock.monotonicNanoseconds()
        control.startTime.store(start, ordering: .releasing)
        let cpuAtStart = System.processCPUSeconds()
        control.letGo()
        onUploadsStart?()
        waitWithProgress(control, count: clients, progress: progress, start: start) { control.waitForArrival(deadline: $0) }
        let uploadEnd = Clock.monotonicNanoseconds()

        // Downloads.
        control.letGo()
        waitWithProgress(control, count: clients, progress: progress, start: start) { control.finished.wait(untilMonotonicNanoseconds: $0) }
        let downloadEnd = Clock.monotonicNanoseconds()
        if progress { System.writeToStandardError("\r\u{1B}[K") }
        for handle in handles { handle.join() }
        let cpuAfter = System.processCPUSeconds()

        let results = control.uploadResults.withLock { table in (0..<clients).compactMap { table[$0]?.value } }
        var report = LoadReport()
        report.kind = .upload
        report.host = options.host
        report.port = options.port
        report.threads = clients
        report.connectionsRequested = clients
        report.size = options.size
        report.messagesPerConnection = options.messages
        report.connectSeconds = connectSeconds
        report.seed = seed
        report.namePrefix = prefix
        let connectLatency = Histogram()
        let uploadLatency = Histogram()
        let downloadLatency = Histogram()
        for r in results {
            report.connections += r.connected
            report.connectFailed += r.connectFailed
            report.unexpectedCloses += r.unexpectedCloses
            report.uploads += r.uploads
            report.uploadBytes += r.uploadBytes
            report.downloads += r.downloads
            report.downloadBytes += r.downloadBytes
            report.hashMismatches += r.hashMismatches
            report.byteMismatches += r.byteMismatches
            report.protocolErrors += r.protocolErrors
            report.refused += r.refused
            report.stalls += r.stalls
            report.lost += r.lost
            connectLatency.merge(r.connectLatency)
            uploadLatency.merge(r.uploadLatency)
            downloadLatency.merge(r.downloadLatency)
        }
        report.mismatches = report.hashMismatches + report.byteMismatches + report.protocolErrors
        report.errors = report.connectFailed + report.unexpectedCloses + report.refused + report.stalls
        report.connectLatency = connectLatency.summaryMicroseconds
        report.uploadLatency = uploadLatency.summaryMicroseconds
        report.downloadLatency = downloadLatency.summaryMicroseconds
        report.latency = report.uploadLatency
        report.uploadSeconds = Double(uploadEnd - start) / 1e9
        report.downloadSeconds = Double(downloadEnd - uploadEnd) / 1e9
        report.durationSeconds = report.uploadSeconds
        report.uploadMBPerSecond = Double(report.uploadBytes) / max(report.uploadSeconds, 1e-9) / 1e6
        report.downloadMBPerSecond = Double(report.downloadBytes) / max(report.downloadSeconds, 1e-9) / 1e6
        report.mbPerSecond = report.uploadMBPerSecond
        report.messages = report.uploads
        report.messagesTotal = report.uploads
        report.msgsPerSecond = Double(report.uploads) / max(report.uploadSeconds, 1e-9)
        let runSeconds = Double(downloadEnd - start) / 1e9
        let cpuSeconds = (cpuAfter.user + cpuAfter.system) - (cpuAtStart.user + cpuAtStart.system)
        report.loadCPUPercent = runSeconds > 0 ? 100 * cpuSeconds / runSeconds : 0
        report.loadCPUSeconds = cpuSeconds
        report.interruption = interruption.signal
        return report
    }

    /// Waits for `count` rings of a phase, printing a progress line each second.
    static func waitWithProgress(
        _ control: RunControl, count: Int, progress: Bool, start: Int64, wait: (Int64) -> Bool
    ) {
        var done = 0
        var nextTick = Clock.monotonicNanoseconds() + 1_000_000_000
        var lastFiles = 0
        var lastBytes = 0
        var lastTick = Clock.monotonicNanoseconds()
        while done < count {
            if wait(nextTick) {
                done += 1
                continue
            }
            let now = Clock.monotonicNanoseconds()
            nextTick = now + 1_000_000_000
            guard progress else { continue }
            let files = control.shared.reduce(0) { $0 + $1.messages.load(ordering: .relaxed) }
            let bytes = control.shared.reduce(0) { $0 + $1.bytes.load(ordering: .relaxed) }
            let seconds = Double(now - lastTick) / 1e9
            let line = LoadReport.progressLine(
                elapsed: Double(now - start) / 1e9,
                connections: control.shared.reduce(0) { $0 + $1.alive.load(ordering: .relaxed) },
                messagesPerSecond: Double(files - lastFiles) / seconds,
                megabytesPerSecond: Double(bytes - lastBytes) / seconds / 1e6,
                p99Micros: 0, errors: control.shared.reduce(0) { $0 + $1.errors.load(ordering: .relaxed) },
                label: "files/s")
            System.writeToStandardError("\r\u{1B}[K" + line)
            lastFiles = files
            lastBytes = bytes
            lastTick = now
        }
    }
}

/// The first few problems of a run, said on stderr as they happen (the
/// rest are counted): a refusal such as `! server storage full` explains a
/// failed run better than a count.
final class ProblemNotes: Sendable {
    private let said = Lock(0)

    func note(_ text: String) {
        let first = said.withLock { count in
            count += 1
            return count <= 5
        }
        if first { System.writeToStandardError("echochat-load: \(text)\n") }
    }
}

/// A file this client uploaded and the server stored.
struct StoredUpload {
    var name: String
    var content: FileContent
    var size: Int
    var hex: String
}

/// One client of the upload mode, on its own thread.
final class UploadClient {
    static let chunkSize = 64 * 1024
    static let receiveCapacity = 256 * 1024
    static let welcomeNanoseconds: Int64 = 10_000_000_000

    let id: Int
    let control: RunControl
    let options: LoadOptions
    let runSeed: UInt64
    let prefix: String
    let notes: ProblemNotes
    let result = UploadResult()
    let shared: WorkerShared
    var socket: Socket?
    let receive: UnsafeMutableRawPointer
    var rxStart = 0
    var rxEnd = 0
    let chunk: UnsafeMutableRawPointer
    let expected: UnsafeMutableRawPointer
    var stored: [StoredUpload] = []
    /// Bytes moved and files done, for the progress line.
    var movedBytes = 0
    var filesDone = 0

    init(id: Int, control: RunControl, runSeed: UInt64, prefix: String, notes: ProblemNotes) {
        self.id = id
        self.control = control
        self.options = control.options
        self.runSeed = runSeed
        self.prefix = prefix
        self.notes = notes
        self.shared = control.shared[id]
        receive = .allocate(byteCount: Self.receiveCapacity, alignment: 64)
        chunk = .allocate(byteCount: Self.chunkSize, alignment: 64)
        expected = .allocate(byteCount: Self.receiveCapacity, alignment: 64)
    }

    deinit {
        socket?.close()
        receive.deallocate()
        chunk.deallocate()
        expected.deallocate()
    }

    /// Every phase arrives, whatever failed, so the others are never held up.
    func run() {
        connect()
        control.arriveAndWait(worker: id)
        uploadPhase()
        publish()
        control.arriveAndWait(worker: id)
        downloadPhase()
        socket?.close()
        socket = nil
        publish()
        control.deliverUpload(result, worker: id)
    }

    func publish() {
        shared.messages.store(filesDone, ordering: .relaxed)
        shared.bytes.store(movedBytes, ordering: .relaxed)
        shared.alive.store(socket == nil ? 0 : 1, ordering: .relaxed)
        shared.errors.store(
            result.refused + result.unexpectedCloses + result.stalls + result.hashMismatches + result.byteMismatches
                + result.protocolErrors, ordering: .relaxed)
    }

    // MARK: - Connecting

    func connect() {
        let began = Clock.monotonicNanoseconds()
        do {
            let socket = try Socket.connect(host: options.host, port: options.port, timeout: min(options.timeout, 30))
            try socket.setNonBlocking(true)
            self.socket = socket
        } catch {
            result.connectFailed += 1
            notes.note("client \(id): \(error)")
            return
        }
        result.connectLatency.record(Clock.monotonicNanoseconds() - began)
        result.connected += 1
        // The welcome: proof that this is a chat server.
        let deadline = Clock.monotonicNanoseconds() + min(Self.welcomeNanoseconds, Int64(options.timeout * 1e9))
        while let line = nextLine(deadline: deadline) {
            if line.hasPrefix("* welcome ") {
                publish()
                return
            }
            if line.hasPrefix("! ") {
                result.refused += 1
                notes.note("client \(id): the server said '\(line)' instead of a welcome")
                drop()
                return
            }
        }
        if socket != nil {
            result.stalls += 1
            notes.note("client \(id): no welcome line from the server (is it a chat server?)")
            drop()
        }
    }

    /// Closes the connection after a failure; the phases go on without it.
    func drop() {
        socket?.close()
        socket = nil
        publish()
    }

    // MARK: - Uploading

    func uploadPhase() {
        let start = control.startTime.load(ordering: .acquiring)
        let end = options.messages == nil ? start + Int64(options.duration * 1e9) : Int64.max
        var index = 0
        while socket != nil {
            if let count = options.messages, index >= count { break }
            let now = Clock.monotonicNanoseconds()
            if now >= end || now >= control.interruption.stopAt { break }
            upload(index: index)
            index += 1
            publish()
        }
    }

    func upload(index: Int) {
        guard let socket else { return }
        let content = FileContent(seed: FileContent.seed(run: runSeed, client: id, index: index))
        let name = "\(prefix)-\(id)-\(index).bin"
        let size = options.size
        let command = Array("/upload \(name) \(size)\n".utf8)
        var hasher = SHA256()
        var commandSent = 0
        var generated = 0
        var chunkStart = 0
        var chunkEnd = 0
        var contentSent = 0
        var answer: (name: String, size: Int, hex: String)?
        var refusal: String?
        let began = Clock.monotonicNanoseconds()
        var lastProgress = began
        while true {
            // Send what the socket takes.
            sending: while commandSent < command.count || contentSent < size {
                let written: IOResult<Int>
                do {
                    if commandSent < command.count {
                        written = try command.withUnsafeBytes { raw throws(SystemError) in
                            try socket.write(UnsafeRawBufferPointer(rebasing: raw[commandSent...]))
                        }
                    } else {
                        if chunkStart == chunkEnd {
                            let count = min(Self.chunkSize, size - generated)
                            content.fill(chunk, offset: generated, count: count)
                            hasher.update(UnsafeRawBufferPointer(start: chunk, count: count))
                            generated += count
                            chunkStart = 0
                            chunkEnd = count
                        }
                        written = try socket.write(UnsafeRawBufferPointer(start: chunk + chunkStart, count: chunkEnd - chunkStart))
                    }
                } catch {
                    closed("while uploading \(name): \(error)")
                    return
                }
                guard case .done(let count) = written else { break sending }
                if commandSent < command.count {
                    commandSent += count
                } else {
                    chunkStart += count
                    contentSent += count
                    movedBytes += count
                }
                lastProgress = Clock.monotonicNanoseconds()
            }
            // Read what the server says.
            while let line = takeLine() {
                if let reply = UploadLines.stored(line) {
                    if contentSent < size || answer != nil || refusal != nil {
                        result.protocolErrors += 1
                        notes.note("client \(id): '\(line)' before the upload of \(name) was complete")
                    }
                    answer = reply
                } else if line.hasPrefix("! ") {
                    refusal = line
                }
            }
            if commandSent == command.count && contentSent == size && (answer != nil || refusal != nil) { break }
            let now = Clock.monotonicNanoseconds()
            if now - lastProgress > Int64(options.timeout * 1e9) {
                stalled("uploading \(name)")
                return
            }
            switch waitAndRead(writable: commandSent < command.count || contentSent < size) {
            case .progress: lastProgress = Clock.monotonicNanoseconds()
            case .idle: break
            case .closed: return
            }
        }
        let finished = Clock.monotonicNanoseconds()
        if let refusal {
            result.refused += 1
            notes.note("client \(id): /upload \(name) \(size): \(refusal)")
            return
        }
        guard let answer else { return }
        let hex = SHA256.hex(hasher.finalize())
        if answer.size != size {
            result.protocolErrors += 1
            notes.note("client \(id): uploaded \(size) bytes as \(name), the server stored \(answer.size)")
        }
        if answer.hex != hex {
            result.hashMismatches += 1
            notes.note("client \(id): \(name): the server's sha256 \(answer.hex) is not ours, \(hex)")
        }
        result.uploadLatency.record(finished - began)
        result.uploads += 1
        result.uploadBytes += size
        filesDone += 1
        stored.append(StoredUpload(name: answer.name, content: content, size: size, hex: hex))
    }

    // MARK: - Downloading

    func downloadPhase() {
        for (index, file) in stored.enumerated() {
            // Interrupted: no new transfer starts; the rest count as not verified.
            guard socket != nil, Clock.monotonicNanoseconds() < control.interruption.stopAt else {
                if socket == nil || control.interruption.signal == nil { result.lost += stored.count - index }
                return
            }
            if !download(file) { result.lost += 1 }
            publish()
        }
    }

    /// True when the whole content arrived (verified or not).
    func download(_ file: StoredUpload) -> Bool {
        guard let socket else { return false }
        let command = Array("/download \(file.name)\n".utf8)
        let began = Clock.monotonicNanoseconds()
        var lastProgress = began
        var commandSent = 0
        var announced: Int?
        var received = 0
        var intact = true
        while true {
            while commandSent < command.count {
                let written: IOResult<Int>
                do {
                    written = try command.withUnsafeBytes { raw throws(SystemError) in
                        try socket.write(UnsafeRawBufferPointer(rebasing: raw[commandSent...]))
                    }
                } catch {
                    closed("while asking for \(file.name): \(error)")
                    return false
                }
                guard case .done(let count) = written else { break }
                commandSent += count
            }
            if announced == nil {
                while let line = takeLine() {
                    if line.hasPrefix("! ") {
                        result.refused += 1
                        notes.note("client \(id): /download \(file.name): \(line)")
                        return false
                    }
                    guard line.hasPrefix("* sending \(file.name) ") else { continue }
                    guard let header = UploadLines.sending(line), header.name == file.name else {
                        result.protocolErrors += 1
                        notes.note("client \(id): a malformed answer to /download \(file.name): '\(line)'")
                        drop()
                        return false
                    }
                    if header.hex != file.hex {
                        result.hashMismatches += 1
                        notes.note("client \(id): \(file.name) announced with sha256 \(header.hex), ours is \(file.hex)")
                    }
                    if header.size != file.size {
                        intact = false
                        notes.note("client \(id): \(file.name) announced with \(header.size) bytes, we uploaded \(file.size)")
                    }
                    announced = header.size
                    break
                }
            }
            if let size = announced {
                // The content: check every byte against the stream it was made from.
                let count = min(rxEnd - rxStart, size - received)
                if count > 0 {
                    let comparable = max(0, min(count, file.size - received))
                    if comparable > 0 && intact {
                        file.content.fill(expected, offset: received, count: comparable)
                        if !bytesEqual(receive + rxStart, expected, count: comparable) {
                            intact = false
                            notes.note("client \(id): \(file.name) came back with a byte that differs, within bytes \(received)...\(received + comparable - 1)")
                        }
                    }
                    rxStart += count
                    received += count
                    movedBytes += count
                    lastProgress = Clock.monotonicNanoseconds()
                }
                if received == size {
                    result.downloadLatency.record(Clock.monotonicNanoseconds() - began)
                    result.downloads += 1
                    result.downloadBytes += size
                    filesDone += 1
                    if !intact { result.byteMismatches += 1 }
                    return true
                }
            }
            if Clock.monotonicNanoseconds() - lastProgress > Int64(options.timeout * 1e9) {
                stalled("downloading \(file.name)")
                return false
            }
            switch waitAndRead(writable: commandSent < command.count) {
            case .progress: lastProgress = Clock.monotonicNanoseconds()
            case .idle: break
            case .closed: return false
            }
        }
    }

    // MARK: - Socket

    enum Outcome { case progress, idle, closed }

    /// Waits up to 100 ms for the socket, then reads what there is into the
    /// receive area (after moving what is left of it to its start).
    func waitAndRead(writable: Bool) -> Outcome {
        guard let socket else { return .closed }
        if rxEnd == Self.receiveCapacity && rxStart == 0 {
            // A line longer than 256 KiB: nothing this client asked for.
            result.protocolErrors += 1
            notes.note("client \(id): a line of more than \(Self.receiveCapacity) bytes")
            drop()
            return .closed
        }
        let state: WaitResult
        do {
            state = try socket.wait(readable: true, writable: writable, timeoutMilliseconds: 100)
        } catch {
            closed("\(error)")
            return .closed
        }
        guard state.readable || state.failed else { return state.writable ? .progress : .idle }
        if rxStart == rxEnd {
            rxStart = 0
            rxEnd = 0
        } else if rxStart > 0 {
            receive.copyMemory(from: receive + rxStart, byteCount: rxEnd - rxStart)
            rxEnd -= rxStart
            rxStart = 0
        }
        let outcome: ReadResult
        do {
            outcome = try socket.read(into: UnsafeMutableRawBufferPointer(start: receive + rxEnd, count: Self.receiveCapacity - rxEnd))
        } catch {
            closed("\(error)")
            return .closed
        }
        switch outcome {
        case .bytes(let count):
            rxEnd += count
            return .progress
        case .endOfFile:
            closed("the server closed the connection")
            return .closed
        case .wouldBlock:
            return .idle
        }
    }

    /// The next complete line in the receive area, without its LF (and CR).
    func takeLine() -> String? {
        guard rxEnd > rxStart, let length = firstNewline(receive + rxStart, count: rxEnd - rxStart) else { return nil }
        var end = length
        if end > 0 && receive.load(fromByteOffset: rxStart + end - 1, as: UInt8.self) == 0x0D { end -= 1 }
        let line = String(decoding: UnsafeRawBufferPointer(start: receive + rxStart, count: end), as: UTF8.self)
        rxStart += length + 1
        return line
    }

    /// The next line, reading until `deadline`; nil when it passed or the connection ended.
    func nextLine(deadline: Int64) -> String? {
        while socket != nil {
            if let line = takeLine() { return line }
            if Clock.monotonicNanoseconds() >= deadline { return nil }
            if waitAndRead(writable: false) == .closed { return nil }
        }
        return nil
    }

    func closed(_ why: String) {
        guard socket != nil else { return }
        result.unexpectedCloses += 1
        notes.note("client \(id): \(why)")
        drop()
    }

    func stalled(_ what: String) {
        result.stalls += 1
        notes.note("client \(id): no progress for \(Format.fixed(options.timeout, decimals: 0)) s \(what)")
        drop()
    }
}
