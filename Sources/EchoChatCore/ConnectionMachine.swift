/// The life of one client connection, as a state machine with no I/O: what
/// every strategy does with a socket, written once. Like `ChatCore`, it keeps
/// no clock (times come in with the events) and touches no descriptor: its
/// actions go out through a `ConnectionIO` the owner supplies (a real socket
/// in the server, a recording fake in the tests).
///
/// Events in: `received` (bytes read), `endOfInput`, `failed`, `flush` (the
/// socket is writable, or lines arrived for it), `tick` (time passed),
/// `takeTurn` (handle input read earlier), `requestClose`, and the settings
/// each event carries (a SIGHUP reload, the shutdown deadline). A refused
/// connection is born with `refusing`.
///
/// Actions out (`ConnectionIO`): write, shut the sending side, close; hand
/// chat bytes to the chat engine and collect the lines it queued here. The
/// owner derives what to wait for from `wantsRead`, `wantsWrite`, `wantsTurn`
/// and `nextDeadline` after each event: pausing and resuming reading, arming
/// and disarming writability are those properties changing.
///
/// The rules it owns (docs/PROTOCOL.md §2, §3.3, §3.5, §3.6, §4):
/// - Echo writes what it read straight back when nothing is queued before it
///   (write first, queue only what the kernel did not take), stops reading
///   when the queue reaches `max-output` and resumes once it has drained to
///   half: backpressure, never loss.
/// - Chat hands bytes to the engine and drops a client whose queue passes
///   `max-output` (slow consumer).
/// - Chat fairness: at most `Limits.linesPerTurn` lines per turn; what a read
///   brought beyond that waits in `input` (and nothing more is read) until the
///   owner gives the connection another turn, after the other clients. A
///   client whose own queue is past half of `max-output` gets no turn and is
///   not read until it drains.
/// - Chat rate limit: a token bucket (`RateBucket`); a client out of tokens
///   keeps its lines in `input`, unread and in order, until it refills; it is
///   told to slow down at the start of a flood, at most once a minute.
/// - Timers: idle, unfinished line, waiting output nobody takes (send
///   timeout), the rate limit's refill, the close timeout of a finished
///   session, the lingering close, the shutdown deadline. Each fires once.
/// - Closing: a finished session delivers its queue, shuts its sending side,
///   and reads (discarding) until the peer closes or the linger ends, so
///   unread input cannot turn close(2) into a reset that destroys the last
///   lines (nginx's lingering close).
public struct ConnectionMachine {
    public enum Mode: Sendable { case echo, chat }

    public enum Phase: Sendable, Equatable {
        /// Reading and writing.
        case open
        /// The session is over: delivering the queue, then closing.
        case closing
        /// Queue delivered, sending side shut: discarding input until the peer closes.
        case lingering
        case closed
    }

    // Field order and `PackedTime` keep this small: every connection holds one.
    public let mode: Mode
    /// A counted client; false for a refused connection (it only gets one line).
    public let admitted: Bool
    public private(set) var phase: Phase
    /// EOF arrived: nothing more will be read.
    public private(set) var inputClosed = false
    /// Echo: not reading because the queue reached `max-output`.
    public private(set) var paused = false
    /// In a flood: paused by the rate limit since `input` was last empty.
    private var flooding = false
    private var shutdownApplied = false
    /// Chat in a cluster: a `/nick` claim, or a `/join` waiting for its
    /// room's channel, is in flight; nothing more is read or handled until
    /// the engine's mail says it was decided.
    private var held = false
    /// Bytes waiting for the kernel, oldest first.
    public private(set) var output = ByteQueue()
    /// Chat: bytes read but not yet handed to the engine (the turn ended, or
    /// the rate limit); at most one read's worth, since reading stops meanwhile.
    public private(set) var input = ByteQueue()
    /// The settings, shared with the other connections of their owner (one
    /// reference, not a copy each); a change comes as another object.
    public private(set) var sharedSettings: SharedConnectionSettings
    public var settings: ConnectionSettings { sharedSettings.value }
    private var lastInput: Int64
    @PackedTime private var partialSince: Int64?
    /// Since when output has waited with none of it taken (nil: none waits).
    @PackedTime private var outputWaitingSince: Int64?
    private var rate = RateBucket()
    /// Paused by the rate limit until then.
    @PackedTime private var rateResumesAt: Int64?
    @PackedTime private var lastSlowDownNotice: Int64?
    @PackedTime private var closeDeadline: Int64?
    @PackedTime private var lingerDeadline: Int64?
    /// Chat: a file transfer under way (§5), kept out of line: most
    /// connections never transfer, and inline it cost each one about 90 bytes.
    private var transfer = OutOfLine<Transfer>()

    private struct Transfer {
        /// An `/upload`'s raw content being received.
        var upload: Upload?
        /// A `/download` being sent.
        var download: Download?
    }

    private var upload: Upload? {
        get { transfer.value?.upload }
        set { updateTransfer { $0.upload = newValue } }
    }

    private var download: Download? {
        get { transfer.value?.download }
        set { updateTransfer { $0.download = newValue } }
    }

    private mutating func updateTransfer(_ body: (inout Transfer) -> Void) {
        transfer.update(creating: Transfer(), body)
        if let value = transfer.value, value.upload == nil && value.download == nil { transfer.clear() }
    }

    private struct Upload {
        /// Content bytes still to come.
        var remaining: Int
        /// Accepted and not failed: the content goes to the store; else it is dropped.
        var storing: Bool
        /// Handed to the store and not yet written.
        var backlog = 0
        /// All the content was handed over: lines wait for the store's outcome.
        var ended = false
    }

    private struct Download {
        let name: String
        /// Content bytes still to send; nil until the store opened the file.
        var remaining: Int?
        /// A read from the store is on its way.
        var reading = false
        /// Lines that came for the client meanwhile: they go out after it.
        var deferred = ByteQueue()
    }

    public init(mode: Mode, settings: ConnectionSettings, now: Int64) {
        self.init(mode: mode, settings: SharedConnectionSettings(settings), now: now)
    }

    public init(mode: Mode, settings: SharedConnectionSettings, now: Int64) {
        self.mode = mode
        self.admitted = true
        self.sharedSettings = settings
        self.lastInput = now
        self.phase = .open
    }

    /// A connection turned away (server full): it gets `line`, then closes.
    public init(refusing line: [UInt8], mode: Mode, settings: ConnectionSettings, now: Int64) {
        self.init(refusing: line, mode: mode, settings: SharedConnectionSettings(settings), now: now)
    }

    public init(refusing line: [UInt8], mode: Mode, settings: SharedConnectionSettings, now: Int64) {
        self.mode = mode
        self.admitted = false
        self.sharedSettings = settings
        self.lastInput = now
        self.phase = .open
        output.append(line)
        requestClose(now: now)
    }

    // MARK: - What the owner waits for

    public var isClosed: Bool { phase == .closed }

    /// Whether the owner should read (and wait for readability).
    public var wantsRead: Bool {
        switch phase {
        case .open: !inputClosed && !paused && !held && input.isEmpty && !inputBlocked && !filesBlockInput
        case .lingering: true
        case .closing, .closed: false
        }
    }

    /// Chat: lines read earlier wait and may be handled now; the owner should
    /// serve the connection again (`takeTurn`) once the others had their turn.
    public var wantsTurn: Bool {
        phase == .open && !held && !input.isEmpty && !inputBlocked && rateResumesAt == nil && !filesBlockInput
    }

    /// Chat fairness: the client's own queue is past half of `max-output`.
    private var inputBlocked: Bool { mode == .chat && settings.limits.chatInputBlocked(queuedBytes: queuedLineBytes) }

    /// Files: nothing more is read or handled while a download is sent, while
    /// an upload's outcome is awaited, or while the store is behind by
    /// `Limits.uploadBacklog` (it writes to disk slower than the client sends).
    private var filesBlockInput: Bool {
        if download != nil { return true }
        guard let upload else { return false }
        return upload.ended || upload.backlog >= Limits.uploadBacklog
    }

    /// The chat lines queued for the client, which `max-output` bounds: a
    /// download's content is not among them (§5), lines that wait for it are.
    public var queuedLineBytes: Int { transfer.value?.download.map { $0.deferred.count } ?? output.count }

    /// Whether an upload or a download is under way.
    public var isTransferring: Bool { upload != nil || download != nil }

    /// Whether the owner should wait for writability: output is waiting.
    public var wantsWrite: Bool { (phase == .open || phase == .closing) && !output.isEmpty }

    /// How many bytes the next read may take (echo: what backpressure allows).
    public func readBudget(_ capacity: Int) -> Int {
        guard mode == .echo, phase == .open else { return capacity }
        return min(capacity, max(0, settings.limits.maxOutput - output.count))
    }

    /// Whether to read and how much: nil when not reading (`wantsRead`),
    /// else `readBudget(capacity)`. It changes nothing; it is `mutating` so
    /// that a caller in another module passes the machine in place, where a
    /// non-mutating call passed a copy (retaining each of its buffers).
    public mutating func nextRead(max capacity: Int) -> Int? { wantsRead ? readBudget(capacity) : nil }

    /// The earliest time `tick` has something to do, if any.
    public var nextDeadline: Int64? {
        switch phase {
        case .closed: return nil
        case .lingering: return lingerDeadline
        case .closing: return settings.shutdownDeadline ?? closeDeadline
        case .open:
            if let deadline = settings.shutdownDeadline { return deadline }
            guard admitted else { return nil }
            let limits = settings.limits
            var next: Int64?
            if limits.idleTimeoutNanoseconds > 0 && wantsRead { next = lastInput + limits.idleTimeoutNanoseconds }
            if let partialSince, limits.lineTimeoutNanoseconds > 0 {
                next = min(next ?? .max, partialSince + limits.lineTimeoutNanoseconds)
            }
            if let outputWaitingSince, limits.sendTimeoutNanoseconds > 0 {
                next = min(next ?? .max, outputWaitingSince + limits.sendTimeoutNanoseconds)
            }
            if let rateResumesAt { next = min(next ?? .max, rateResumesAt) }
            return next
        }
    }

    /// What the owner asks after each call, in one pass. A server keeps it
    /// beside the machine: reading the properties one by one from another
    /// module passed a copy of the whole machine to each getter.
    public struct Status: Equatable, Sendable {
        public var isClosed: Bool
        public var wantsRead: Bool
        public var wantsWrite: Bool
        public var wantsTurn: Bool
        public var nextDeadline: Int64?
        public var queuedLineBytes: Int
        public var paused: Bool
        public var lingering: Bool
    }

    public var status: Status {
        var machine = self
        return machine.currentStatus()
    }

    /// `status` for the machine's own mutating calls: as a mutating method it
    /// reads the fields in place, where the getter made a copy of the machine
    /// (retaining each of its buffers) once per event.
    private mutating func currentStatus() -> Status {
        Status(
            isClosed: isClosed, wantsRead: wantsRead, wantsWrite: wantsWrite, wantsTurn: wantsTurn,
            nextDeadline: nextDeadline, queuedLineBytes: queuedLineBytes, paused: paused, lingering: phase == .lingering)
    }

    // MARK: - Events

    /// New settings (a reload, or the shutdown deadline). Every event takes
    /// them first; the shutdown deadline, once set, ends the session.
    public mutating func update(_ settings: ConnectionSettings, now: Int64) {
        update(SharedConnectionSettings(settings), now: now)
    }

    public mutating func update(_ shared: SharedConnectionSettings, now: Int64) {
        sharedSettings = shared
        let settings = shared.value
        guard let deadline = settings.shutdownDeadline, !shutdownApplied else { return }
        shutdownApplied = true
        switch phase {
        case .open: requestClose(now: now)
        case .lingering: lingerDeadline = min(lingerDeadline ?? deadline, deadline)
        case .closing, .closed: break
        }
    }

    /// Bytes read from the client (at most `readBudget` of them).
    public mutating func received(_ bytes: UnsafeRawBufferPointer, now: Int64, io: inout some ConnectionIO) {
        guard phase == .open, !inputClosed else { return }  // lingering: discarded
        lastInput = now
        switch mode {
        case .echo:
            var offset = 0
            if output.isEmpty {
                guard let written = io.write(bytes) else { return fail(.connectionError, io: &io) }
                offset = written
            }
            if offset < bytes.count {
                output.append(UnsafeRawBufferPointer(rebasing: bytes[offset...]))
                if offset > 0 || outputWaitingSince == nil { outputWaitingSince = now }
            }
            if output.count >= settings.limits.maxOutput { paused = true }
        case .chat:
            let taken = feedChat(bytes, now: now, io: &io)
            if taken < bytes.count && phase == .open { input.append(UnsafeRawBufferPointer(rebasing: bytes[taken...])) }
        }
    }

    /// Chat: hands on lines read earlier, as many as a turn and the rate
    /// limit allow. Call when `wantsTurn` (a no-op otherwise).
    public mutating func takeTurn(now: Int64, io: inout some ConnectionIO) {
        guard wantsTurn else { return }
        var waiting = ByteQueue()
        swap(&waiting, &input)
        let taken = waiting.withReadableBytes { feedChat($0, now: now, io: &io) }
        waiting.consume(taken)
        swap(&waiting, &input)
        // Not idle while its lines waited (paused, held, its turn to come):
        // the idle clock starts again when they are taken (§3.5, §3.6).
        if taken > 0 { lastInput = now }
        if phase != .open { input.removeAll() }
    }

    /// Chat: an upload's raw content goes to the store (or is dropped), the
    /// lines around it to the engine, as far as this turn, the rate limit and
    /// the transfers allow. Returns the bytes taken; the rest waits in `input`.
    private mutating func feedChat(_ bytes: UnsafeRawBufferPointer, now: Int64, io: inout some ConnectionIO) -> Int {
        var offset = 0
        while offset < bytes.count && phase == .open {
            if var current = upload, !current.ended {
                if current.storing && current.backlog >= Limits.uploadBacklog { break }
                let count = min(current.remaining, bytes.count - offset)
                if current.storing {
                    io.uploadData(UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + count)]))
                    current.backlog += count
                }
                current.remaining -= count
                offset += count
                upload = current
                if current.remaining == 0 { contentReceived(io: &io) }
                continue
            }
            if filesBlockInput { break }
            guard !held, let intake = handOver(UnsafeRawBufferPointer(rebasing: bytes[offset...]), now: now, io: &io) else { break }
            offset += intake.consumed
            if intake.held {
                held = true
                break
            }
            if let start = intake.upload {
                beginUpload(start, io: &io)
                continue
            }
            if let name = intake.download { beginDownload(name, now: now, io: &io) }
            break
        }
        return offset
    }

    private mutating func beginUpload(_ start: ChatCore.UploadStart, io: inout some ConnectionIO) {
        upload = Upload(remaining: start.size, storing: start.name != nil)
        if let name = start.name { io.uploadBegin(name: name, size: start.size) }
        if start.size == 0 { contentReceived(io: &io) }
    }

    /// The last content byte arrived: a stored upload waits for the store.
    private mutating func contentReceived(io: inout some ConnectionIO) {
        guard upload?.storing == true else {
            upload = nil
            return
        }
        upload?.ended = true
        io.uploadEnd()
    }

    /// Lines queued before the `/download` go out before its content: they
    /// are collected now; the ones that come during it wait in `deferred`.
    private mutating func beginDownload(_ name: String, now: Int64, io: inout some ConnectionIO) {
        let mail = io.collect(into: &output)
        download = Download(name: name)
        io.downloadBegin(name)
        apply(mail, now: now, io: &io)
    }

    /// The store's news, and the engine's close or abort.
    private mutating func apply(_ mail: Mail, now: Int64, io: inout some ConnectionIO) {
        for event in mail.files { apply(event, io: &io) }
        if mail.resumed { held = false }
        if let reason = mail.abort { return fail(reason, io: &io) }
        if mail.closeRequested { requestClose(now: now) }
    }

    private mutating func apply(_ event: FileEvent, io: inout some ConnectionIO) {
        switch event {
        case .uploadWritten(let count):
            upload?.backlog -= count
        case .uploadEnded:
            guard let current = upload else { return }
            if current.ended {
                upload = nil  // stored or failed, the client was told: lines resume
            } else {
                upload?.storing = false  // failed early: the rest of the content is dropped
                upload?.backlog = 0
            }
        case .downloadOpened(let size, let sha256):
            guard let current = download, current.remaining == nil else { return }
            output.append(Replies.sending(current.name, size: size, sha256: sha256))
            download?.remaining = size
            if size == 0 { endDownload(io: &io) }
        case .downloadData(let bytes):
            guard let remaining = download?.remaining else { return }
            let count = min(bytes.count, remaining)
            bytes.withUnsafeBytes { output.append(UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
            download?.remaining = remaining - count
            download?.reading = false
            if remaining - count == 0 { endDownload(io: &io) }
        case .downloadFailed:
            guard let current = download else { return }
            if current.remaining == nil {
                output.append(Replies.noSuchFile(current.name))
                endDownload(io: &io)
            } else {
                // The header promised bytes that cannot come: the stream is
                // broken, so the connection ends.
                fail(.connectionError, io: &io)
            }
        }
    }

    /// The next piece of a download, once the kernel took most of the last.
    private mutating func requestDownloadPiece(io: inout some ConnectionIO) {
        guard var current = download, let remaining = current.remaining, remaining > 0, !current.reading,
            output.count < Limits.downloadChunk
        else { return }
        current.reading = true
        download = current
        io.downloadRead(max: min(remaining, Limits.downloadChunk))
    }

    private mutating func endDownload(io: inout some ConnectionIO) {
        let deferred = download?.deferred
        download = nil
        io.downloadEnd()
        if let deferred, !deferred.isEmpty { deferred.withReadableBytes { output.append($0) } }
    }

    /// Chat: gives the engine what this turn allows of `bytes`; nil when the
    /// rate limit paused the client (nothing taken).
    private mutating func handOver(_ bytes: UnsafeRawBufferPointer, now: Int64, io: inout some ConnectionIO) -> ChatIntake? {
        let limits = settings.limits
        let allowed = rate.available(now: now, limits: limits)
        guard allowed > 0 else {
            pauseForRate(now: now, io: &io)
            return nil
        }
        let intake = io.chatReceive(bytes, maxLines: min(Limits.linesPerTurn, allowed), queuedBytes: queuedLineBytes)
        rate.spend(intake.lines, now: now, limits: limits)
        if intake.upload != nil || intake.download != nil || intake.held {
            partialSince = nil  // a transfer, or a wait, follows the line that ended
            return intake
        }
        guard intake.consumed == bytes.count else {
            partialSince = nil  // what waits unread is not the client's unfinished line
            if rate.available(now: now, limits: limits) == 0 { pauseForRate(now: now, io: &io) }
            return intake
        }
        flooding = false
        if limits.lineTimeoutNanoseconds > 0 {
            if !intake.partialLine {
                partialSince = nil
            } else if partialSince == nil || bytes.contains(0x0A) {
                // An LF in this read ended the line that was waiting, so
                // the unfinished one started now, however reads were cut.
                partialSince = now
            }
        }
        return intake
    }

    /// Out of tokens with lines waiting: stop until one is due. The client
    /// is told at the start of a flood, at most once a minute.
    private mutating func pauseForRate(now: Int64, io: inout some ConnectionIO) {
        rateResumesAt = rate.nextAllowed(now: now, limits: settings.limits)
        guard !flooding else { return }
        flooding = true
        let notify = lastSlowDownNotice.map { now - $0 >= Limits.slowDownNoticeInterval } ?? true
        if notify { lastSlowDownNotice = now }
        io.chatRateLimited(linesPerSecond: settings.limits.rateLimit, notify: notify)
    }

    /// The client shut down its sending side (or closed).
    public mutating func endOfInput(now: Int64, io: inout some ConnectionIO) {
        switch phase {
        case .lingering:
            close(.finished, io: &io)
        case .open where !inputClosed:
            inputClosed = true
            partialSince = nil
            switch mode {
            case .echo: requestClose(now: now)
            case .chat: io.chatEndOfInput()  // the engine answers, then asks for the close
            }
        default:
            break
        }
    }

    /// The session must end at once, its queue dropped: a socket error, or a
    /// slow consumer. The chat engine is told unless it already let go.
    public mutating func failed(_ reason: DisconnectReason, io: inout some ConnectionIO) {
        fail(reason, io: &io)
    }

    /// The session is over (the chat engine forgot the client, echo saw EOF,
    /// a timeout): deliver the queue, then close, within `close-timeout`.
    public mutating func requestClose(now: Int64) {
        guard phase == .open else { return }
        phase = .closing
        paused = false
        closeDeadline = now + settings.closeTimeoutNanoseconds
    }

    /// Takes the lines queued for this connection and writes what the kernel
    /// takes. Call when the socket is writable and after every other event.
    /// Returns the status after it (cheaper for a caller in another module
    /// than reading `status`, which copies the machine to compute it).
    @discardableResult
    public mutating func flush(now: Int64, io: inout some ConnectionIO) -> Status {
        flushOutput(now: now, io: &io)
        return currentStatus()
    }

    private mutating func flushOutput(now: Int64, io: inout some ConnectionIO) {
        guard phase == .open || phase == .closing else { return }
        if mode == .chat {
            let mail =
                download == nil
                ? io.collect(into: &output) : transfer.update(creating: Transfer()) { io.collect(into: &$0.download!.deferred) }
            apply(mail, now: now, io: &io)
            guard phase == .open || phase == .closing else { return }
            requestDownloadPiece(io: &io)
        }
        var progressed = false
        let limits = settings.limits
        while !output.isEmpty {
            guard let written = output.withReadableBytes({ io.write($0) }) else { return fail(.connectionError, io: &io) }
            if written == 0 { break }
            output.consume(written)
            progressed = true
            // Echo resumes reading the moment its queue is down to half: stop
            // writing there, so the owner reads again while the other half
            // keeps the socket busy. A client that reads as fast as this writes
            // would otherwise be written the whole queue first.
            if paused && limits.echoMayResume(queuedBytes: output.count) { break }
        }
        // The kernel may have taken all of it: ask for the next piece now,
        // or nothing would wake this connection again.
        requestDownloadPiece(io: &io)
        if output.isEmpty {
            outputWaitingSince = nil
        } else if progressed || outputWaitingSince == nil {
            outputWaitingSince = now
        }
        if mode == .chat && admitted && phase == .open && limits.isSlowConsumer(queuedBytes: queuedLineBytes) {
            return fail(.slowConsumer, io: &io)
        }
        if paused && limits.echoMayResume(queuedBytes: output.count) {
            paused = false
            lastInput = now  // its idle clock stood still while it was not read
        }
        if phase == .closing && output.isEmpty { finishClose(now: now, io: &io) }
    }

    /// Time passed: fires whatever timer is due, once.
    public mutating func tick(now: Int64, io: inout some ConnectionIO) {
        switch phase {
        case .closed:
            return
        case .lingering:
            if let lingerDeadline, now >= lingerDeadline { close(.lingerEnded, io: &io) }
        case .closing:
            if let deadline = settings.shutdownDeadline {
                if now >= deadline { close(.shutdownDeadline, io: &io) }
            } else if let closeDeadline, now >= closeDeadline {
                close(.closeTimeout, io: &io)
            }
        case .open:
            if let deadline = settings.shutdownDeadline {
                if now >= deadline { close(.shutdownDeadline, io: &io) }
                return
            }
            guard admitted else { return }
            let limits = settings.limits
            if let resumes = rateResumesAt, now >= resumes || limits.rateLimit == 0 { rateResumesAt = nil }
            if limits.isSendTimedOut(waitingSince: outputWaitingSince, now: now) {
                fail(.sendTimeout, io: &io)
            } else if limits.isIdle(lastInput: lastInput, now: now, reading: self.wantsRead) {
                expire(.idleTimeout, now: now, io: &io)
            } else if mode == .chat && limits.isLineTimedOut(partialSince: partialSince, now: now) {
                expire(.lineTimeout, now: now, io: &io)
            }
        }
    }

    // MARK: - Internals

    /// A timer ended the session. Chat: the engine tells the client and the
    /// room, then asks for the close; echo closes after its queue.
    private mutating func expire(_ reason: DisconnectReason, now: Int64, io: inout some ConnectionIO) {
        partialSince = nil
        lastInput = now
        switch mode {
        case .chat: io.chatDisconnect(reason)
        case .echo: requestClose(now: now)
        }
        io.expired(reason)
    }

    private mutating func fail(_ reason: DisconnectReason, io: inout some ConnectionIO) {
        guard phase != .closed else { return }
        output.removeAll()
        if mode == .chat && admitted && phase == .open { io.chatDisconnect(reason) }
        close(.failed(reason), io: &io)
    }

    /// Queue delivered: close now if the peer already closed its side (or
    /// lingering is off), else shut ours and linger.
    private mutating func finishClose(now: Int64, io: inout some ConnectionIO) {
        if inputClosed || settings.lingerNanoseconds <= 0 { return close(.finished, io: &io) }
        io.shutdownWrite()
        var deadline = now + settings.lingerNanoseconds
        if let shutdown = settings.shutdownDeadline { deadline = min(deadline, shutdown) }
        lingerDeadline = deadline
        phase = .lingering
        if admitted { io.sessionEnded() }
    }

    private mutating func close(_ cause: CloseCause, io: inout some ConnectionIO) {
        guard phase != .closed else { return }
        let wasSession = phase != .lingering
        phase = .closed
        paused = false
        output.removeAll()
        input.removeAll()
        if let current = upload, current.storing || current.ended { io.uploadAbort() }
        upload = nil
        if download != nil { io.downloadEnd() }
        download = nil
        if admitted && wasSession { io.sessionEnded() }
        io.close(cause)
    }
}

/// `ConnectionSettings` that every connection of one owner refers to, until
/// they change: 8 bytes per connection instead of a copy of about 100, and a
/// change is seen by identity (`!==`), not by comparing every field.
public final class SharedConnectionSettings: Sendable {
    public let value: ConnectionSettings

    public init(_ value: ConnectionSettings) { self.value = value }
}

/// What a connection's timers and limits are, as the owner sees them now.
public struct ConnectionSettings: Sendable, Equatable {
    public var limits: Limits
    /// How long a finished session may take to deliver its last output.
    public var closeTimeoutNanoseconds: Int64
    /// How long a closing connection waits for the peer to close (0: not at all).
    public var lingerNanoseconds: Int64
    /// Set once the server shuts down: everything closes by then.
    public var shutdownDeadline: Int64?

    /// Lingering lasts at most this long (nginx's `lingering_time` idea, shorter).
    public static let defaultLinger: Int64 = 2_000_000_000

    public init(
        limits: Limits = Limits(), closeTimeoutNanoseconds: Int64 = 30_000_000_000,
        lingerNanoseconds: Int64 = ConnectionSettings.defaultLinger, shutdownDeadline: Int64? = nil
    ) {
        self.limits = limits
        self.closeTimeoutNanoseconds = closeTimeoutNanoseconds
        self.lingerNanoseconds = lingerNanoseconds
        self.shutdownDeadline = shutdownDeadline
    }
}

/// Why a connection's descriptor was closed (for the owner's log line).
public enum CloseCause: Sendable, Equatable {
    /// Delivered and (if lingering) the peer closed.
    case finished
    case failed(DisconnectReason)
    /// The finished session's last output was not taken within `close-timeout`.
    case closeTimeout
    /// The peer did not close within the linger time.
    case lingerEnded
    case shutdownDeadline
}

/// What the chat engine left for a connection since the last collection.
public struct Mail: Sendable, Equatable {
    /// The engine forgot the client: deliver the queue, then close.
    public var closeRequested: Bool
    /// The engine found the client too slow (its queue would pass `max-output`).
    public var abort: DisconnectReason?
    /// What the file store did for this connection, in order.
    public var files: [FileEvent]
    /// The engine decided the client's nick claim or join: its input flows again.
    public var resumed: Bool

    public init(closeRequested: Bool = false, abort: DisconnectReason? = nil, files: [FileEvent] = [], resumed: Bool = false) {
        self.closeRequested = closeRequested
        self.abort = abort
        self.files = files
        self.resumed = resumed
    }
}

/// The file store's answers to a connection's upload or download (§5),
/// delivered with its mail.
public enum FileEvent: Sendable, Equatable {
    /// This many bytes of the upload's content are on disk.
    case uploadWritten(Int)
    /// The store is done with the upload: stored, or failed (the engine told
    /// the client which). Content still to come is dropped.
    case uploadEnded
    /// The download's file is open: its header may go out.
    case downloadOpened(size: Int, sha256: String)
    /// The next piece of the download's content.
    case downloadData([UInt8])
    /// The file could not be opened or read.
    case downloadFailed
}

/// The actions of a `ConnectionMachine`: what its owner does for it.
public protocol ConnectionIO {
    /// Writes `bytes`; returns how many the kernel took (0: it would block),
    /// or nil when the connection failed.
    mutating func write(_ bytes: UnsafeRawBufferPointer) -> Int?
    /// Shuts the sending side (the peer reads EOF after the queue).
    mutating func shutdownWrite()
    /// Releases the descriptor. Called exactly once, last.
    mutating func close(_ cause: CloseCause)
    /// An admitted client's session is over (it stops counting as a client).
    mutating func sessionEnded()
    /// A timer ended the session (for the log).
    mutating func expired(_ reason: DisconnectReason)
    /// Chat: hands received bytes to the engine, at most `maxLines` lines of
    /// them, stopping early once the client's own queue (`queuedBytes` here,
    /// plus what the engine queued for it since) is past half of `max-output`
    /// or the engine found the client too slow.
    mutating func chatReceive(_ bytes: UnsafeRawBufferPointer, maxLines: Int, queuedBytes: Int) -> ChatIntake
    /// Chat: the rate limit paused the client; `notify`: tell it to slow down.
    mutating func chatRateLimited(linesPerSecond: Int, notify: Bool)
    /// Chat: the client shut down its sending side.
    mutating func chatEndOfInput()
    /// Chat: the session ends for `reason` (the engine tells the room).
    mutating func chatDisconnect(_ reason: DisconnectReason)
    /// Chat: moves the lines queued for this connection to the end of `output`.
    mutating func collect(into output: inout ByteQueue) -> Mail

    // Files (§5): the store answers with `FileEvent`s in the connection's mail.
    /// An accepted upload of `size` bytes, to be stored as `name` (or `name-N`).
    mutating func uploadBegin(name: String, size: Int)
    /// The next piece of its content.
    mutating func uploadData(_ bytes: UnsafeRawBufferPointer)
    /// All of its content was handed over: flush, name, announce.
    mutating func uploadEnd()
    /// The connection ends: whatever the store has of the upload goes.
    mutating func uploadAbort()
    /// A download of the stored file `name` starts.
    mutating func downloadBegin(_ name: String)
    /// The next piece of it, at most `max` bytes.
    mutating func downloadRead(max: Int)
    /// The download is over (sent, failed or the connection ended).
    mutating func downloadEnd()
}

/// What the chat engine did with bytes handed to it.
public struct ChatIntake: Sendable, Equatable {
    /// Bytes it took; the rest waits for the connection's next turn.
    public var consumed: Int
    /// Lines it handled (they count against the rate limit).
    public var lines: Int
    /// An unfinished line is waiting for its LF (the line timeout runs).
    public var partialLine: Bool
    /// The last line was an `/upload`: its raw content follows `consumed`.
    public var upload: ChatCore.UploadStart?
    /// The last line was a `/download` of this file.
    public var download: String?
    /// The last line was a `/nick` claimed through the cluster, or a
    /// `/join` waiting for its room's channel: hand in nothing more until
    /// the mail says `resumed`.
    public var held: Bool

    public init(
        consumed: Int, lines: Int, partialLine: Bool, upload: ChatCore.UploadStart? = nil, download: String? = nil,
        held: Bool = false
    ) {
        self.consumed = consumed
        self.lines = lines
        self.partialLine = partialLine
        self.upload = upload
        self.download = download
        self.held = held
    }
}
