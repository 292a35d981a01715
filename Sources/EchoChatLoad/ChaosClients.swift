import EchoChatPOSIX

// The hostile clients of `echochat-load chaos`. Each kind runs on a thread of
// its own with its own epoll instance (or poll(2) for a handful of sockets),
// until its deadline or an interruption, and hands back counts. None of them
// verifies the server's answers the way the well-behaved clients do: they
// exist to make the server's life hard, and report what the server did to
// them (dropped, closed, refused, stopped reading).

/// The server under test and when to stop.
struct ChaosTarget: Sendable {
    let address: SocketAddress
    let chat: Bool
    let interruption: Interruption

    /// `deadline`, or the moment of an interruption if that came first.
    func stop(_ deadline: Int64) -> Int64 { min(deadline, interruption.stopAt) }
}

/// Socket recipes the hostile clients share.
enum ChaosSocket {
    /// A connected non-blocking socket (TCP_NODELAY), or nil when the connect
    /// failed or took longer than `timeout` seconds.
    static func open(_ address: SocketAddress, timeout: Double = 2) -> Socket? {
        guard let (socket, status) = try? Socket.startConnect(to: address) else { return nil }
        if case .wouldBlock = status {
            let interest = Poll.Interest(socket.descriptor, readable: false, writable: true)
            let ready = (try? Poll.wait([interest], timeoutMilliseconds: Int32(timeout * 1000))) ?? []
            if ready.isEmpty || socket.connectionError() != nil {
                socket.close()
                return nil
            }
        }
        return socket
    }

    /// Reads and throws away what has arrived, at most `maxReads` reads (so
    /// one busy socket cannot hold its thread); `inspect` sees each chunk.
    /// True when the peer closed (end of file or an error such as a reset).
    static func drain(
        _ socket: Socket, buffer: UnsafeMutableRawBufferPointer, bytes: inout Int, maxReads: Int = 16,
        inspect: (UnsafeRawBufferPointer) -> Void = { _ in }
    ) -> Bool {
        for _ in 0..<maxReads {
            switch try? socket.read(into: buffer) {
            case .bytes(let count)?:
                bytes += count
                inspect(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
            case .wouldBlock?: return false
            default: return true
            }
        }
        return false
    }

    /// Writes as much of `bytes` as the kernel takes now; nil when the
    /// connection failed (the peer closed or reset it).
    static func writeSome(_ socket: Socket, _ bytes: UnsafeRawBufferPointer) -> Int? {
        var written = 0
        while written < bytes.count {
            switch try? socket.write(UnsafeRawBufferPointer(rebasing: bytes[written...])) {
            case .done(let count)?: written += count
            case .wouldBlock?: return written
            case nil: return nil
            }
        }
        return written
    }

    static func writeSome(_ socket: Socket, _ bytes: [UInt8]) -> Int? {
        bytes.withUnsafeBytes { writeSome(socket, $0) }
    }

    /// Sends a few bytes on a fresh socket, which the kernel takes whole;
    /// false (and the socket closed) when it does not.
    static func send(_ socket: Socket, _ text: String) -> Bool {
        let bytes = Array(text.utf8)
        if writeSome(socket, bytes) == bytes.count { return true }
        socket.close()
        return false
    }

    /// Closes with SO_LINGER 0: the peer gets a reset, not a FIN.
    static func reset(_ socket: Socket) {
        try? socket.setResetOnClose()
        socket.close()
    }
}

/// A small deterministic generator (xorshift64*), so a run's garbage can be
/// reproduced.
struct ChaosRandom {
    private var state: UInt64
    init(seed: UInt64) { state = seed == 0 ? 0x9E37_79B9_7F4A_7C15 : seed }

    mutating func next() -> UInt64 {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return state &* 0x2545_F491_4F6C_DD1D
    }

    mutating func byte() -> UInt8 { UInt8(truncatingIfNeeded: next() >> 32) }
}

// MARK: - Flooders and slow consumers

/// What the flooders and the slow consumers saw.
struct FloodResult: Sendable {
    /// Flooder connections opened (a flooder the server drops is replaced).
    var flooders = 0
    /// Flooders the server closed (chat: they fell behind and became slow consumers themselves).
    var flooderDrops = 0
    var bytesSent = 0
    var bytesReceived = 0
    var slowConsumers = 0
    /// Chat: slow consumers whose connection the server closed.
    var slowDropped = 0
    /// Chat: seconds from the start of the flood until the first and the
    /// last slow consumer was dropped.
    var firstDrop: Double?
    var lastDrop: Double?
    /// Echo: slow consumers the server stopped reading (their sends would block).
    var slowBackpressured = 0
    /// Echo: slow consumers the server closed (only `send-timeout` should).
    var slowClosed = 0
    var connectFailed = 0
}

/// Flooders send as fast as the server takes it (chat: 1,000-byte lines into
/// #chaos-flood; echo: bytes that come back) and read everything they get.
/// Slow consumers never read: in chat they sit in #chaos-flood and must be
/// dropped by the server once `max-output` is queued for them; in echo they
/// send until the server stops reading them.
///
/// A dropped slow consumer cannot tell by itself: the server's FIN waits
/// behind the data it had already queued in the kernel, which the client
/// never reads. So the server's side of each connection is looked up in
/// /proc/net/tcp every 100 ms (chaos runs against local servers only):
/// anything but ESTABLISHED (or no socket at all) means the server closed
/// it. In chat the flood goes on past its deadline, up to `dropSlack`
/// seconds, until every slow consumer has been dropped: on a busy machine a
/// server may drop late, which is not the same as never.
enum FloodChaos {
    static let room = "chaos-flood"
    static let floodLine = 1000
    static let dropSlack: Int64 = 10_000_000_000

    static func run(_ target: ChaosTarget, flooders: Int, slowConsumers: Int, until: Int64) -> FloodResult {
        var result = FloodResult()
        guard flooders + slowConsumers > 0, let poller = try? Poller() else { return result }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 64)
        defer {
            buffer.deallocate()
            poller.close()
        }
        var events = PollEvents(capacity: 256)
        // 64 lines of 1,000 bytes, sent round and round from a moving offset.
        var payload: [UInt8] = []
        for line in 0..<64 {
            let head = Array("chaos flood \(line) ".utf8)
            payload += head + [UInt8](repeating: UInt8(0x61 + line % 26), count: floodLine - 1 - head.count) + [0x0A]
        }
        var sockets = [Socket?](repeating: nil, count: flooders + slowConsumers)
        var slowPorts = [Int](repeating: -1, count: slowConsumers)
        var dropped = [Bool](repeating: false, count: slowConsumers)
        let floodStart = Clock.monotonicNanoseconds()
        var offsets = [Int](repeating: 0, count: flooders)
        var backpressured = [Bool](repeating: false, count: slowConsumers)

        func openFlooder(_ slot: Int) {
            guard let socket = ChaosSocket.open(target.address) else {
                result.connectFailed += 1
                return
            }
            if target.chat && !ChaosSocket.send(socket, "/join \(room)\n") { return }
            do { try poller.register(socket.descriptor, for: [.readable, .writable], data: UInt64(slot)) } catch {
                socket.close()
                return
            }
            sockets[slot] = socket
            result.flooders += 1
        }
        func closeSlot(_ slot: Int) {
            guard let socket = sockets[slot] else { return }
            try? poller.unregister(socket.descriptor)
            socket.close()
            sockets[slot] = nil
        }

        for slot in 0..<flooders { openFlooder(slot) }
        for index in 0..<slowConsumers {
            let slot = flooders + index
            guard let socket = ChaosSocket.open(target.address) else {
                result.connectFailed += 1
                continue
            }
            if target.chat && !ChaosSocket.send(socket, "/nick chaos-slow-\(index)\n/join \(room)\n") { continue }
            sockets[slot] = socket
            slowPorts[index] = (try? socket.localAddress().port) ?? -1
            result.slowConsumers += 1
        }

        // Echo slow consumers write every 50 ms until a write would block:
        // epoll would not say when (it reports writability only once a third
        // of the send buffer is free, which never happens once the server has
        // stopped reading).
        var nextPush: Int64 = 0
        var nextLookup: Int64 = 0
        /// Marks the slow consumers whose server side is no longer established.
        func lookUpDrops(now: Int64) {
            let serverPort = target.address.port
            var states: [Int: Int] = [:]
            for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
                guard let bytes = try? System.readFile(file) else { continue }
                states.merge(ProcFacts.serverSideTCPStates(String(decoding: bytes, as: UTF8.self), serverPort: serverPort)) { a, _ in a }
            }
            for index in 0..<slowConsumers where sockets[flooders + index] != nil && !dropped[index] && slowPorts[index] > 0 {
                guard states[slowPorts[index]] != 1 else { continue }
                dropped[index] = true
                result.slowDropped += 1
                let seconds = Double(now - floodStart) / 1e9
                result.firstDrop = min(result.firstDrop ?? seconds, seconds)
                result.lastDrop = max(result.lastDrop ?? seconds, seconds)
            }
        }
        func push(_ index: Int) {
            let slot = flooders + index
            guard let socket = sockets[slot], !backpressured[index] else { return }
            for _ in 0..<64 {
                guard let written = ChaosSocket.writeSome(socket, payload) else {
                    result.slowClosed += 1
                    closeSlot(slot)
                    return
                }
                result.bytesSent += written
                if written < payload.count {
                    backpressured[index] = true
                    result.slowBackpressured += 1
                    return
                }
            }
        }

        while true {
            let now = Clock.monotonicNanoseconds()
            if target.chat && now >= nextLookup {
                nextLookup = now + 100_000_000
                lookUpDrops(now: now)
            }
            var stop = target.stop(until)
            if target.chat && target.interruption.signal == nil && result.slowDropped < result.slowConsumers {
                stop = until + dropSlack
            }
            if now >= stop { break }
            if !target.chat && now >= nextPush {
                nextPush = now + 50_000_000
                for index in 0..<slowConsumers { push(index) }
            }
            let ready = (try? poller.wait(into: &events, timeoutMilliseconds: Int32(min(50, (stop - now) / 1_000_000 + 1)))) ?? 0
            for index in 0..<ready {
                let slot = Int(events.data(at: index))
                let flags = events.events(at: index)
                guard slot < flooders, let socket = sockets[slot] else { continue }
                var closed = false
                if !flags.isDisjoint(with: [.readable, .error, .hangup]) {
                    closed = ChaosSocket.drain(socket, buffer: buffer, bytes: &result.bytesReceived)
                }
                if !closed && flags.contains(.writable) {
                    // At most 256 KiB per turn, so reading keeps up.
                    var budget = 256 * 1024
                    while budget > 0 {
                        let offset = offsets[slot]
                        let chunk = min(budget, payload.count - offset)
                        let written = payload.withUnsafeBytes { raw in
                            ChaosSocket.writeSome(socket, UnsafeRawBufferPointer(rebasing: raw[offset..<(offset + chunk)]))
                        }
                        guard let written else {
                            closed = true
                            break
                        }
                        result.bytesSent += written
                        offsets[slot] = (offset + written) % payload.count
                        budget -= written
                        if written < chunk || written == 0 { break }
                    }
                }
                if closed {
                    result.flooderDrops += 1
                    closeSlot(slot)
                    openFlooder(slot)
                }
            }
        }
        for slot in 0..<(flooders + slowConsumers) { closeSlot(slot) }
        return result
    }
}

// MARK: - Resets

struct ResetResult: Sendable {
    var handled = 0
    var midLine = 0
    var midOutput = 0
    /// Mid-output resets whose output had started arriving.
    var outputSeen = 0
    var connectFailed = 0
}

/// `count` clients over the phase (at most 64 alive at once) that vanish
/// with a reset (SO_LINGER 0): half of them mid-line (a partial line, no LF),
/// half mid-output (after asking for a lot of output: chat 20 x `/help`,
/// echo 256 KiB; reset as soon as the answer starts to arrive, or 200 ms).
enum ResetChaos {
    static func run(_ target: ChaosTarget, count: Int, until: Int64) -> ResetResult {
        var result = ResetResult()
        guard count > 0, let poller = try? Poller() else { return result }
        defer { poller.close() }
        var events = PollEvents(capacity: 64)
        let start = Clock.monotonicNanoseconds()
        // All started a little before the end, so every one is counted.
        let gap = max(1, (until - start) * 9 / 10 / Int64(count))
        let trigger: [UInt8] = target.chat
            ? Array(String(repeating: "/help\n", count: 20).utf8)
            : (0..<(256 * 1024)).map { UInt8(0x41 + $0 % 26) }
        // Alive: socket, reset deadline, registered for output.
        var alive: [Int32: (socket: Socket, deadline: Int64, registered: Bool)] = [:]
        var started = 0

        func reset(_ fd: Int32) {
            guard let entry = alive.removeValue(forKey: fd) else { return }
            if entry.registered { try? poller.unregister(fd) }
            ChaosSocket.reset(entry.socket)
            result.handled += 1
        }

        while true {
            var now = Clock.monotonicNanoseconds()
            let stop = target.stop(until)
            if now >= stop { break }
            while started < count && alive.count < 64 && now >= start + Int64(started) * gap {
                let index = started
                started += 1
                guard let socket = ChaosSocket.open(target.address) else {
                    result.connectFailed += 1
                    continue
                }
                if index % 2 == 0 {
                    let partial = "chaos partial line \(index) that never ends" + String(repeating: "-", count: index % 97)
                    _ = ChaosSocket.writeSome(socket, Array(partial.utf8))
                    alive[socket.descriptor] = (socket, now + Int64(index % 20) * 1_000_000, false)
                    result.midLine += 1
                } else {
                    _ = ChaosSocket.writeSome(socket, trigger)
                    let registered = (try? poller.register(socket.descriptor, for: .readable, data: UInt64(socket.descriptor))) != nil
                    alive[socket.descriptor] = (socket, now + 200_000_000, registered)
                    result.midOutput += 1
                }
                now = Clock.monotonicNanoseconds()
            }
            var wake = min(stop, now + 10_000_000)
            if started < count { wake = min(wake, start + Int64(started) * gap) }
            for entry in alive.values { wake = min(wake, entry.deadline) }
            let timeout = Int32(max(0, (wake - now + 999_999) / 1_000_000))
            let ready = (try? poller.wait(into: &events, timeoutMilliseconds: timeout)) ?? 0
            for index in 0..<ready {
                let fd = Int32(truncatingIfNeeded: events.data(at: index))
                if alive[fd] != nil {
                    result.outputSeen += 1
                    reset(fd)
                }
            }
            now = Clock.monotonicNanoseconds()
            for (fd, entry) in alive where entry.deadline <= now { reset(fd) }
        }
        for fd in Array(alive.keys) { reset(fd) }
        return result
    }
}

// MARK: - Slowloris

struct SlowlorisResult: Sendable {
    var clients = 0
    var connectFailed = 0
    var bytesSent = 0
    /// Clients whose connection the server closed.
    var closedByServer = 0
    /// Seconds from a client's first byte until the server closed it: the
    /// shortest and the longest.
    var firstClose: Double?
    var lastClose: Double?
}

/// `count` clients that send one byte every `interval` seconds and never an
/// LF, and read (and discard) whatever they get, until the deadline. With
/// `closeWithin` (the server's line-timeout plus some slack, in seconds),
/// they go on past the deadline until the server has closed them all or
/// that long has passed since their first byte: a server that enforces
/// its line-timeout late on a busy machine is not one that ignores it.
enum SlowlorisChaos {
    static let interval: Int64 = 2_000_000_000

    static func run(_ target: ChaosTarget, count: Int, until: Int64, closeWithin: Double? = nil) -> SlowlorisResult {
        var result = SlowlorisResult()
        guard count > 0, let poller = try? Poller() else { return result }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 16 * 1024, alignment: 64)
        defer {
            buffer.deallocate()
            poller.close()
        }
        var events = PollEvents(capacity: 256)
        var sockets = [Socket?](repeating: nil, count: count)
        var firstByte = [Int64](repeating: 0, count: count)
        var nextByte = [Int64](repeating: 0, count: count)
        var received = 0

        func closedByServer(_ slot: Int, now: Int64) {
            guard let socket = sockets[slot] else { return }
            try? poller.unregister(socket.descriptor)
            socket.close()
            sockets[slot] = nil
            result.closedByServer += 1
            let seconds = Double(now - firstByte[slot]) / 1e9
            result.firstClose = min(result.firstClose ?? seconds, seconds)
            result.lastClose = max(result.lastClose ?? seconds, seconds)
        }

        for slot in 0..<count {
            guard let socket = ChaosSocket.open(target.address) else {
                result.connectFailed += 1
                continue
            }
            guard (try? poller.register(socket.descriptor, for: .readable, data: UInt64(slot))) != nil else {
                socket.close()
                continue
            }
            sockets[slot] = socket
            result.clients += 1
        }
        while true {
            var now = Clock.monotonicNanoseconds()
            var stop = target.stop(until)
            if now >= stop, let closeWithin, target.interruption.signal == nil, sockets.contains(where: { $0 != nil }) {
                let started = firstByte.filter { $0 > 0 }.min() ?? now
                stop = max(stop, started + Int64(closeWithin * 1e9))
            }
            if now >= stop { break }
            for slot in 0..<count where sockets[slot] != nil && nextByte[slot] <= now {
                let letter = [UInt8(0x61 + (slot + result.bytesSent) % 26)]
                guard ChaosSocket.writeSome(sockets[slot]!, letter) != nil else {
                    closedByServer(slot, now: now)
                    continue
                }
                result.bytesSent += 1
                if firstByte[slot] == 0 { firstByte[slot] = now }
                nextByte[slot] = now + interval
            }
            if sockets.allSatisfy({ $0 == nil }) && now >= until { break }
            let wake = min(stop, nextByte.enumerated().filter { sockets[$0.offset] != nil }.map(\.element).min() ?? stop)
            let ready = (try? poller.wait(into: &events, timeoutMilliseconds: Int32(max(1, min(100, (wake - now) / 1_000_000 + 1))))) ?? 0
            now = Clock.monotonicNanoseconds()
            for index in 0..<ready {
                let slot = Int(events.data(at: index))
                guard let socket = sockets[slot] else { continue }
                if ChaosSocket.drain(socket, buffer: buffer, bytes: &received) { closedByServer(slot, now: now) }
            }
        }
        for socket in sockets.compactMap({ $0 }) { socket.close() }
        return result
    }
}

// MARK: - Garbage

/// The kinds of garbage, one client session at a time each.
enum GarbageKind: String, CaseIterable, Sendable {
    case random
    case nul
    case longLine = "long_line"
    case invalidUTF8 = "invalid_utf8"
    case escapes
    case commands

    var title: String {
        switch self {
        case .random: "random bytes"
        case .nul: "NUL flood"
        case .longLine: "10 MiB without LF"
        case .invalidUTF8: "invalid UTF-8"
        case .escapes: "terminal escapes"
        case .commands: "/join+/nick at 1,000/s"
        }
    }

    /// Pause between two sessions.
    var pause: Int64 { self == .longLine ? 500_000_000 : 100_000_000 }

    /// What one session sends. In chat, every kind but `commands` first
    /// joins #chaos-garbage, so its lines reach only the other garbage clients.
    func payload(chat: Bool) -> [UInt8] {
        var bytes: [UInt8] = chat && self != .commands ? Array("/join \(GarbageChaos.room)\n".utf8) : []
        var random = ChaosRandom(seed: 0x5EED_0000 &+ UInt64(rawValue.utf8.count))
        switch self {
        case .random:
            for _ in 0..<(256 * 1024) {
                var byte = random.byte()
                // Never a command: no line starts with '/'.
                if byte == 0x2F && (bytes.last == 0x0A || bytes.isEmpty) { byte = 0x3F }
                bytes.append(byte)
            }
        case .nul:
            for index in 0..<(1 << 20) { bytes.append(index % 1024 == 1023 ? 0x0A : 0) }
        case .longLine:
            bytes += [UInt8](unsafeUninitializedCapacity: 10 << 20) { buffer, count in
                for index in 0..<buffer.count { buffer[index] = UInt8(0x41 + index % 26) }
                count = buffer.count
            }
        case .invalidUTF8:
            let pieces: [[UInt8]] = [
                [0xC0, 0x80], [0xFF], [0xFE], [0x80, 0x80], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80],
                [0xE2, 0x82], [0xF0, 0x9F, 0x98], [0xC3], [0xE0, 0x80, 0xAF],
            ]
            for line in 0..<1000 {
                bytes += Array("bad utf-8 \(line) ".utf8) + pieces[line % pieces.count] + pieces[(line * 7) % pieces.count] + [0x0A]
            }
        case .escapes:
            let pieces = [
                "\u{1B}[2J\u{1B}[H", "\u{1B}]0;pwned\u{07}", "\u{1B}[31mred\u{1B}[0m", "\u{9B}31m", "\u{7F}\u{08}\u{08}",
                "a\rb", "\u{202E}reversed", "line\u{2028}split", "\u{1B}P+q\u{1B}\\", "\u{00}\u{01}\u{1F}",
            ]
            for line in 0..<1000 { bytes += Array("escape \(line) \(pieces[line % pieces.count])\n".utf8) }
        case .commands:
            for line in 0..<1000 {
                bytes += Array((line % 2 == 0 ? "/join chaos-junk-\(line % 50)\n" : "/nick junk\(line)\n").utf8)
            }
        }
        return bytes
    }
}

struct GarbageResult: Sendable {
    /// Sessions the server saw through: everything sent, the sending side
    /// shut, and the server's answer read to its end.
    var sessions: [String: Int] = [:]
    var bytesSent = 0
    var bytesReceived = 0
    /// Chat: characters PROTOCOL.md §3.1 step 3 removes (C0 but TAB and LF,
    /// DEL, C1, line/paragraph separators, bidi controls) in what the garbage
    /// clients received: escapes the server let through.
    var controlsRelayed = 0
    /// Echo: sessions whose echo was not exactly as long as what was sent.
    var echoMismatched = 0
    /// Chat: sessions the server closed with `* line timeout` before
    /// everything was sent (a 10 MiB line is slow to send to a server under
    /// a flood); counted as handled too.
    var lineTimeouts = 0
    /// Sessions the server closed before everything was sent, for no reason it gave.
    var closedEarly = 0
    /// Sessions the server had not closed 10 s after their sending side was shut.
    var unfinished = 0
    var connectFailed = 0

    var handled: Int { sessions.values.reduce(0, +) }
}

/// One session per kind at a time: connect, send the kind's payload (the
/// commands at 1,000 lines per second), shut the sending side, read to the
/// end; then the next session after a pause.
enum GarbageChaos {
    static let room = "chaos-garbage"
    static let drainLimit: Int64 = 10_000_000_000
    static let lineTimeout = Array("* line timeout\n".utf8)

    struct Lane {
        let kind: GarbageKind
        let payload: [UInt8]
        /// commands: where each line ends, to send them on schedule.
        let lineEnds: [Int]
        var socket: Socket?
        var startedAt: Int64 = 0
        var sent = 0
        var received = 0
        var draining = false
        var drainDeadline: Int64 = 0
        var nextStart: Int64 = 0
        /// The two bytes before this chunk (older in the high byte), to see a
        /// multi-byte control split across reads.
        var previous: UInt16 = 0
        /// The last bytes received: what the server said before it closed.
        var tail: [UInt8] = []

        /// How much of the payload may have gone out by `now`.
        func allowed(now: Int64) -> Int {
            guard kind == .commands else { return payload.count }
            let due = Int((now - startedAt) / 1_000_000) + 1  // 1,000 lines per second
            return due >= lineEnds.count ? payload.count : lineEnds[due - 1]
        }
    }

    /// Every kind's payload, in `GarbageKind.allCases` order: built before
    /// the storm starts (11 MiB or so), so no session waits for it.
    static func payloads(chat: Bool) -> [[UInt8]] { GarbageKind.allCases.map { $0.payload(chat: chat) } }

    static func run(_ target: ChaosTarget, payloads: [[UInt8]], until: Int64) -> GarbageResult {
        var result = GarbageResult()
        guard let poller = try? Poller() else { return result }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 64)
        defer {
            buffer.deallocate()
            poller.close()
        }
        var events = PollEvents(capacity: 16)
        var lanes = zip(GarbageKind.allCases, payloads).map { kind, payload in
            let ends = kind == .commands ? payload.indices.filter { payload[$0] == 0x0A }.map { $0 + 1 } : []
            return Lane(kind: kind, payload: payload, lineEnds: ends)
        }
        for kind in GarbageKind.allCases { result.sessions[kind.rawValue] = 0 }

        func end(_ slot: Int, now: Int64) {
            guard let socket = lanes[slot].socket else { return }
            try? poller.unregister(socket.descriptor)
            socket.close()
            lanes[slot].socket = nil
            lanes[slot].nextStart = now + lanes[slot].kind.pause
        }

        // At `until` no new session starts, but the ones under way may finish
        // (for at most `drainLimit` more): on a slow machine a short storm
        // could otherwise end with every session cut off and none to judge.
        while true {
            var now = Clock.monotonicNanoseconds()
            if now >= target.interruption.stopAt { break }
            let finishing = now >= until
            if finishing && (!lanes.contains { $0.socket != nil } || now >= until + drainLimit) { break }
            for slot in lanes.indices {
                if lanes[slot].socket == nil && !finishing && now >= lanes[slot].nextStart {
                    guard let socket = ChaosSocket.open(target.address) else {
                        result.connectFailed += 1
                        lanes[slot].nextStart = now + lanes[slot].kind.pause
                        continue
                    }
                    guard (try? poller.register(socket.descriptor, for: .readable, data: UInt64(slot))) != nil else {
                        socket.close()
                        continue
                    }
                    lanes[slot].socket = socket
                    lanes[slot].startedAt = now
                    lanes[slot].sent = 0
                    lanes[slot].received = 0
                    lanes[slot].draining = false
                    lanes[slot].previous = 0
                    lanes[slot].tail = []
                }
                guard let socket = lanes[slot].socket else { continue }
                if lanes[slot].draining {
                    if now >= lanes[slot].drainDeadline {
                        result.unfinished += 1
                        end(slot, now: now)
                    }
                    continue
                }
                let allowed = lanes[slot].allowed(now: now)
                if lanes[slot].sent < allowed {
                    let written = lanes[slot].payload.withUnsafeBytes { raw in
                        ChaosSocket.writeSome(socket, UnsafeRawBufferPointer(rebasing: raw[lanes[slot].sent..<allowed]))
                    }
                    guard let written else {
                        result.closedEarly += 1
                        end(slot, now: now)
                        continue
                    }
                    lanes[slot].sent += written
                    result.bytesSent += written
                }
                if lanes[slot].sent == lanes[slot].payload.count {
                    socket.shutdownWrite()
                    lanes[slot].draining = true
                    lanes[slot].drainDeadline = now + drainLimit
                }
            }
            // A short wait: sending is paced by this loop, not by EPOLLOUT.
            let ready = (try? poller.wait(into: &events, timeoutMilliseconds: 2)) ?? 0
            now = Clock.monotonicNanoseconds()
            for index in 0..<ready {
                let slot = Int(events.data(at: index))
                guard let socket = lanes[slot].socket else { continue }
                var previous = lanes[slot].previous
                var tail = lanes[slot].tail
                let closed = ChaosSocket.drain(socket, buffer: buffer, bytes: &lanes[slot].received) { chunk in
                    guard target.chat else { return }
                    tail = Array((tail + chunk.suffix(32)).suffix(32))
                    for byte in chunk {
                        if ChaosCheck.endsForbidden(previous: previous, byte) { result.controlsRelayed += 1 }
                        previous = previous << 8 | UInt16(byte)
                    }
                }
                lanes[slot].previous = previous
                lanes[slot].tail = tail
                guard closed else { continue }
                result.bytesReceived += lanes[slot].received
                if lanes[slot].draining {
                    result.sessions[lanes[slot].kind.rawValue, default: 0] += 1
                    if !target.chat && lanes[slot].received != lanes[slot].sent { result.echoMismatched += 1 }
                } else if tail.suffix(Self.lineTimeout.count).elementsEqual(Self.lineTimeout) {
                    result.sessions[lanes[slot].kind.rawValue, default: 0] += 1
                    result.lineTimeouts += 1
                } else {
                    result.closedEarly += 1
                }
                end(slot, now: now)
            }
        }
        for slot in lanes.indices {
            if let socket = lanes[slot].socket {
                result.bytesReceived += lanes[slot].received
                socket.close()
            }
        }
        return result
    }
}

/// What a chat client must never receive from another (§3.1 step 3), checked
/// byte by byte on UTF-8 output.
enum ChaosCheck {
    /// Whether `byte`, after the two bytes `previous` (older one high), ends
    /// a forbidden character.
    static func endsForbidden(previous: UInt16, _ byte: UInt8) -> Bool {
        if (byte < 0x20 && byte != 0x0A && byte != 0x09) || byte == 0x7F { return true }
        let one = UInt8(previous & 0xFF)
        let two = UInt8(previous >> 8)
        if one == 0xC2 && (0x80...0x9F).contains(byte) { return true }  // C1
        if one == 0xD8 && byte == 0x9C { return true }  // U+061C
        // U+200E U+200F, U+2028–U+202E (E2 80 xx), U+2066–U+2069 (E2 81 xx).
        if two == 0xE2 && one == 0x80 && (byte == 0x8E || byte == 0x8F || (0xA8...0xAE).contains(byte)) { return true }
        if two == 0xE2 && one == 0x81 && (0xA6...0xA9).contains(byte) { return true }
        return false
    }
}
