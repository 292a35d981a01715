import EchoChatPOSIX

/// One chat client as its worker sees it.
struct ChatConnection {
    var fd: Int32 = -1
    var open = false
    var wantOut = false
    var id = 0
    /// Bytes of an unfinished line at the start of this client's receive area.
    var rxLength = 0
    /// "(K here)" from the welcome line; 0 until it arrives.
    var welcomeRoomSize = 0
    var joinsSeen = 0
    /// Index among this worker's senders, or -1.
    var senderIndex = -1
    var txStart = 0
    var txEnd = 0
    var writtenBytes = 0
}

/// A worker of the chat workload. All clients are in one room: #lobby, or
/// the room `options.room` names, which each client joins on its welcome.
/// Phases: connect; read every welcome, or every `* you joined` reply (each
/// says how many are in the room);
/// wait until every client has seen the join notice of every client that came
/// after it; then the senders send on a fixed schedule (open loop) while
/// every client checks what it receives: each line from each other sender
/// exactly once, in that sender's order, intact. Notice lines (`* `) are ignored.
enum ChatWorker {
    static let receiveCapacity = 16 * 1024
    static let settleNanoseconds: Int64 = 10_000_000_000
    /// After the last send, the run waits for lines still on their way
    /// until none has arrived for this long...
    static let drainNanoseconds: Int64 = 3_000_000_000
    /// ...but never longer than this after the last send. A line that is
    /// late is slow (its latency says so), not lost; only a server that has
    /// stopped delivering ends the wait early.
    static let drainLimitNanoseconds: Int64 = 30_000_000_000

    static func run(worker: Int, ids: [Int], control: RunControl) {
        let result = WorkerResult()
        let options = control.options
        let senders = options.effectiveSenders
        let rate = options.effectiveRate
        let perSender = options.messages ?? Int((rate * options.duration).rounded(.up)) + 1
        result.tracker = ChatTracker(receivers: ids, senders: senders, perSender: perSender)
        guard let poller = try? Poller() else {
            result.connectFailed = ids.count
            for _ in 0..<3 { control.arriveAndWait(worker: worker) }
            control.deliver(result, worker: worker)
            return
        }
        var events = PollEvents(capacity: 512)
        let descriptors = Connector.connectAll(
            ids: ids, poller: poller, events: &events, control: control, worker: worker, result: result)
        var loop = ChatLoop(poller: poller, ids: ids, descriptors: descriptors, options: options, result: result)
        defer { loop.closeAll() }
        control.arriveAndWait(worker: worker)

        // Every welcome line.
        var deadline = Clock.monotonicNanoseconds() + settleNanoseconds
        loop.settle(events: &events, deadline: deadline) { $0.welcomeRoomSize > 0 }
        var largest = 0
        for slot in 0..<ids.count where loop.connections[slot].open {
            largest = max(largest, loop.connections[slot].welcomeRoomSize)
        }
        control.shared[worker].maxWelcome.store(largest, ordering: .relaxed)
        control.arriveAndWait(worker: worker)

        // Every join notice of the clients that came later.
        let room = control.roomSize.load(ordering: .acquiring)
        deadline = Clock.monotonicNanoseconds() + settleNanoseconds
        loop.settle(events: &events, deadline: deadline) { $0.joinsSeen >= room - $0.welcomeRoomSize }
        control.arriveAndWait(worker: worker)

        let start = control.startTime.load(ordering: .acquiring)
        loop.run(events: &events, control: control, worker: worker, start: start, perSender: perSender)
        result.tracker = loop.tracker
        control.deliver(result, worker: worker)
    }
}

struct ChatLoop {
    let poller: Poller
    let connections: UnsafeMutablePointer<ChatConnection>
    let count: Int
    let size: Int
    /// `--hosts`: how many servers (connection i is on server i mod n).
    let servers: Int
    let receiveArea: UnsafeMutableRawPointer
    let sendArea: UnsafeMutableRawPointer
    let sendCapacity: Int
    /// Slots of this worker's senders, in ascending global id.
    let senderSlots: [Int]
    let result: WorkerResult
    var tracker: ChatTracker
    /// With a room: `/join ROOM\n`, sent on the welcome; the reply's prefix;
    /// and how another client's join notice for that room ends.
    let joinCommand: [UInt8]?
    let roomJoinedSuffix: [UInt8]
    var now: Int64 = 0
    var end: Int64 = .max
    var live = 0
    var delivered = 0

    init(poller: Poller, ids: [Int], descriptors: [Int32], options: LoadOptions, result: WorkerResult) {
        self.poller = poller
        self.count = ids.count
        self.size = options.size
        self.servers = max(1, options.hosts.count)
        self.result = result
        self.tracker = result.tracker!
        joinCommand = options.room.map { Array("/join \($0)\n".utf8) }
        roomJoinedSuffix = Array(" joined #\(options.room ?? "")".utf8)
        connections = .allocate(capacity: max(1, ids.count))
        var senderSlots: [Int] = []
        for slot in 0..<ids.count {
            var connection = ChatConnection(fd: descriptors[slot], open: descriptors[slot] >= 0, id: ids[slot])
            if ids[slot] < options.effectiveSenders {
                connection.senderIndex = senderSlots.count
                senderSlots.append(slot)
            }
            connections.advanced(by: slot).initialize(to: connection)
            if connection.open { live += 1 }
        }
        self.senderSlots = senderSlots
        receiveArea = .allocate(byteCount: max(1, ids.count) * ChatWorker.receiveCapacity, alignment: 64)
        sendCapacity = max(32 * 1024, options.size * 64)
        sendArea = .allocate(byteCount: max(1, senderSlots.count) * sendCapacity, alignment: 64)
    }

    func closeAll() {
        for slot in 0..<count where connections[slot].open { Socket(descriptor: connections[slot].fd).close() }
        connections.deallocate()
        receiveArea.deallocate()
        sendArea.deallocate()
        poller.close()
    }

    /// Reads until `done` holds for every open client, or the deadline.
    mutating func settle(events: inout PollEvents, deadline: Int64, done: (ChatConnection) -> Bool) {
        while true {
            var all = true
            for slot in 0..<count where connections[slot].open && !done(connections[slot]) {
                all = false
                break
            }
            now = Clock.monotonicNanoseconds()
            if all || now >= deadline { return }
            let timeout = Int32(min(100, (deadline - now + 999_999) / 1_000_000))
            let ready = (try? poller.wait(into: &events, timeoutMilliseconds: timeout)) ?? 0
            now = Clock.monotonicNanoseconds()
            handle(events: events, count: ready)
        }
    }

    mutating func handle(events: borrowing PollEvents, count ready: Int) {
        for index in 0..<ready {
            let slot = Int(events.data(at: index))
            let flags = events.events(at: index)
            guard connections[slot].open else { continue }
            if flags.contains(.readable) { handleRead(slot) }
            if flags.contains(.writable) && connections[slot].open { flush(slot) }
            if !flags.contains(.readable) && connections[slot].open && !flags.isDisjoint(with: [.error, .hangup]) {
                fail(slot)
            }
        }
    }

    mutating func run(events: inout PollEvents, control: RunControl, worker: Int, start: Int64, perSender: Int) {
        let options = control.options
        let senders = options.effectiveSenders
        let gap = 1e9 / (options.effectiveRate * Double(senders))
        let messagesMode = options.messages != nil
        end = messagesMode ? start + Int64(options.timeout * 1e9) : start + Int64(options.duration * 1e9)
        let shared = control.shared[worker]
        var scheduled = 0
        var running = true
        var drainDeadline = Int64.max
        var drainBase: Int64 = 0
        var drainSeen = 0
        var finalPublished = false
        var nextPublish: Int64 = 0
        var nextPercentile = start + 1_000_000_000
        let senderCount = senderSlots.count
        var interrupted = false
        while true {
            now = Clock.monotonicNanoseconds()
            let stopAt = control.interruption.stopAt
            if stopAt < end {
                end = stopAt
                interrupted = true
            }
            // Send everything that is due.
            var nextDue = Int64.max
            while running && senderCount > 0 {
                let sequence = scheduled / senderCount
                let slot = senderSlots[scheduled - sequence * senderCount]
                if sequence >= perSender { break }
                let at = start + Int64((Double(sequence) * Double(senders) + Double(connections[slot].id)) * gap)
                if at >= end && (!messagesMode || interrupted) { break }
                if at > now {
                    nextDue = at
                    break
                }
                if now - at > result.maxSendLag { result.maxSendLag = now - at }
                scheduled += 1
                send(slot, sequence: sequence, at: at)
            }
            if running && nextDue == Int64.max {
                running = false
                drainBase = messagesMode ? max(now, start) : max(now, end)
                drainSeen = delivered
                drainDeadline = drainBase + ChatWorker.drainNanoseconds
            }
            if !running && delivered != drainSeen && stopAt == .max {
                // Lines are still arriving: wait for them (unless the user
                // asked to stop: then the report comes within 3 s, as before).
                drainSeen = delivered
                drainDeadline = min(max(now, drainBase) + ChatWorker.drainNanoseconds,
                                    drainBase + ChatWorker.drainLimitNanoseconds)
            }
            if !running && !finalPublished {
                let pending = senderSlots.contains { connections[$0].open && connections[$0].txEnd > connections[$0].txStart }
                if !pending || now >= drainDeadline {
                    shared.sentFinal.store(linesWritten(), ordering: .releasing)
                    finalPublished = true
                }
            }
            if finalPublished {
                if now >= drainDeadline { break }
                var total = 0
                var allFinal = true
                for other in control.shared {
                    let sent = other.sentFinal.load(ordering: .acquiring)
                    if sent < 0 { allFinal = false } else { total += sent }
                }
                if allFinal && delivered >= expected(totalSent: total) { break }
            }
            var until = min(nextDue, drainDeadline, now + 100_000_000)
            if running && !messagesMode { until = min(until, end) }
            var ready = 0
            if until - now < 1_000_000 {
                ready = (try? poller.wait(into: &events, timeoutMilliseconds: 0)) ?? 0
                if ready == 0 && until > now { Clock.sleep(untilMonotonicNanoseconds: min(until, now + 200_000)) }
            } else {
                ready = (try? poller.wait(into: &events, timeoutMilliseconds: Int32((until - now) / 1_000_000))) ?? 0
            }
            now = Clock.monotonicNanoseconds()
            handle(events: events, count: ready)
            if now >= nextPublish {
                nextPublish = now + 100_000_000
                shared.messages.store(delivered, ordering: .relaxed)
                shared.bytes.store(result.deliveredBytes, ordering: .relaxed)
                shared.errors.store(result.unexpectedCloses + result.mismatches + result.errors, ordering: .relaxed)
                shared.alive.store(live, ordering: .relaxed)
                if now >= nextPercentile {
                    nextPercentile = now + 1_000_000_000
                    shared.p99.store(Int(result.latency.value(atPercentile: 99)), ordering: .relaxed)
                }
            }
        }
        if !finalPublished { shared.sentFinal.store(linesWritten(), ordering: .releasing) }
        result.sentBySender = senderSlots.map { (connections[$0].id, connections[$0].writtenBytes / size) }
        result.errors += result.unexpectedCloses
        shared.messages.store(delivered, ordering: .relaxed)
    }

    func linesWritten() -> Int {
        senderSlots.reduce(0) { $0 + connections[$1].writtenBytes / size }
    }

    /// What this worker's clients are owed: every line every other sender wrote.
    func expected(totalSent: Int) -> Int {
        var owed = 0
        for slot in 0..<count {
            owed += totalSent - (connections[slot].senderIndex >= 0 ? connections[slot].writtenBytes / size : 0)
        }
        return owed
    }

    mutating func send(_ slot: Int, sequence: Int, at: Int64) {
        let c = connections + slot
        guard c.pointee.open else { return }
        let area = sendArea + c.pointee.senderIndex * sendCapacity
        if c.pointee.txEnd + size > sendCapacity && c.pointee.txStart > 0 {
            let pending = c.pointee.txEnd - c.pointee.txStart
            area.copyMemory(from: area + c.pointee.txStart, byteCount: pending)
            c.pointee.txStart = 0
            c.pointee.txEnd = pending
        }
        guard c.pointee.txEnd + size <= sendCapacity else {
            // The server is not taking this sender's lines; skip rather than
            // queue without bound (the line is neither sent nor expected).
            result.sendSkipped += 1
            return
        }
        ChatLine.encode(sender: c.pointee.id, sequence: sequence, sendTime: at, size: size, into: area + c.pointee.txEnd)
        c.pointee.txEnd += size
        if !c.pointee.wantOut { flush(slot) }
    }

    mutating func flush(_ slot: Int) {
        let c = connections + slot
        guard c.pointee.senderIndex >= 0 else { return }
        let area = sendArea + c.pointee.senderIndex * sendCapacity
        let socket = Socket(descriptor: c.pointee.fd)
        while c.pointee.txStart < c.pointee.txEnd {
            let bytes = UnsafeRawBufferPointer(start: area + c.pointee.txStart, count: c.pointee.txEnd - c.pointee.txStart)
            do {
                guard case .done(let written) = try socket.write(bytes) else { break }
                c.pointee.txStart += written
                c.pointee.writtenBytes += written
            } catch {
                fail(slot)
                return
            }
        }
        if c.pointee.txStart == c.pointee.txEnd {
            c.pointee.txStart = 0
            c.pointee.txEnd = 0
        }
        let needOut = c.pointee.txEnd > c.pointee.txStart
        if needOut != c.pointee.wantOut {
            c.pointee.wantOut = needOut
            do {
                try poller.modify(c.pointee.fd, for: needOut ? [.readable, .writable] : .readable, data: UInt64(slot))
            } catch {
                fail(slot)
            }
        }
    }

    mutating func handleRead(_ slot: Int) {
        let c = connections + slot
        let area = receiveArea + slot * ChatWorker.receiveCapacity
        if c.pointee.rxLength == ChatWorker.receiveCapacity {
            // A line longer than anything this run sends: garbage.
            result.mismatches += 1
            c.pointee.rxLength = 0
        }
        let space = UnsafeMutableRawBufferPointer(
            start: area + c.pointee.rxLength, count: ChatWorker.receiveCapacity - c.pointee.rxLength)
        let outcome: ReadResult
        do { outcome = try Socket(descriptor: c.pointee.fd).read(into: space) } catch {
            fail(slot)
            return
        }
        guard case .bytes(let received) = outcome else {
            if outcome == .endOfFile { fail(slot) }
            return
        }
        let total = c.pointee.rxLength + received
        var lineStart = 0
        while lineStart < total, let length = firstNewline(area + lineStart, count: total - lineStart) {
            line(slot, UnsafeRawBufferPointer(start: area + lineStart, count: length))
            lineStart += length + 1
        }
        let rest = total - lineStart
        if rest > 0 && lineStart > 0 { area.copyMemory(from: area + lineStart, byteCount: rest) }
        c.pointee.rxLength = rest
    }

    static let welcomePrefix = Array("* welcome ".utf8)
    static let joinedMarker = Array(" joined #".utf8)
    static let youJoinedPrefix = Array("* you joined #".utf8)

    mutating func line(_ slot: Int, _ text: UnsafeRawBufferPointer) {
        guard text.count >= 2 else {
            result.mismatches += 1
            return
        }
        if text[0] == 0x2A && text[1] == 0x20 {  // "* " notice
            result.notices += 1
            if joinCommand != nil {
                // In a room of our own: only that room's notices count; the
                // join notices of #lobby (met before moving) do not.
                if text.starts(with: Self.welcomePrefix) {
                    join(slot)
                } else if text.starts(with: Self.youJoinedPrefix) {
                    connections[slot].welcomeRoomSize = Self.roomSize(inWelcome: text)
                } else if text.count > roomJoinedSuffix.count
                    && UnsafeRawBufferPointer(rebasing: text[(text.count - roomJoinedSuffix.count)...]).elementsEqual(roomJoinedSuffix)
                {
                    connections[slot].joinsSeen += 1
                }
            } else if text.starts(with: Self.welcomePrefix) {
                connections[slot].welcomeRoomSize = Self.roomSize(inWelcome: text)
            } else if Self.contains(text, Self.joinedMarker) {
                connections[slot].joinsSeen += 1
            }
            return
        }
        if text[0] == 0x21 && text[1] == 0x20 {  // "! " an error from the server
            result.errors += 1
            return
        }
        // "<nick> message"
        guard text[0] == 0x3C, let close = text.firstIndex(of: 0x3E), close + 1 < text.count, text[close + 1] == 0x20 else {
            result.mismatches += 1
            return
        }
        let body = UnsafeRawBufferPointer(rebasing: text[(close + 2)...])
        guard let parsed = ChatLine.parse(body, size: size) else {
            result.mismatches += 1
            return
        }
        switch tracker.record(slot: slot, sender: parsed.sender, sequence: parsed.sequence) {
        case .delivered, .reordered:
            delivered += 1
            result.deliveredBytes += text.count + 1
            if now < end { result.windowDeliveries += 1 }
            result.latency.record(now - parsed.sendTime)
            if servers > 1 {
                // Sender ids are client ids, which decide the server.
                let same = parsed.sender % servers == connections[slot].id % servers
                (same ? result.sameServerLatency : result.crossServerLatency).record(now - parsed.sendTime)
            }
        case .duplicated: break
        case .ignored: result.mismatches += 1
        }
    }

    /// Sends `/join ROOM` right after the welcome: the first bytes this
    /// client writes, so the kernel takes them whole (or the client fails).
    mutating func join(_ slot: Int) {
        guard let command = joinCommand else { return }
        let written = command.withUnsafeBytes { try? Socket(descriptor: connections[slot].fd).write($0) }
        if written != .done(command.count) { fail(slot) }
    }

    /// K from a welcome line or a `* you joined #room (K here)` reply.
    static func roomSize(inWelcome text: UnsafeRawBufferPointer) -> Int {
        guard let open = text.lastIndex(of: 0x28) else { return 0 }  // "(K here)"
        var value = 0
        var index = open + 1
        while index < text.count, text[index] >= 0x30, text[index] <= 0x39 {
            value = value * 10 + Int(text[index] - 0x30)
            index += 1
        }
        return value
    }

    static func contains(_ text: UnsafeRawBufferPointer, _ marker: [UInt8]) -> Bool {
        guard text.count >= marker.count else { return false }
        for start in 0...(text.count - marker.count) {
            var match = true
            for index in 0..<marker.count where text[start + index] != marker[index] {
                match = false
                break
            }
            if match { return true }
        }
        return false
    }

    mutating func fail(_ slot: Int) {
        let c = connections + slot
        guard c.pointee.open else { return }
        try? poller.unregister(c.pointee.fd)
        Socket(descriptor: c.pointee.fd).close()
        c.pointee.open = false
        result.unexpectedCloses += 1
        live -= 1
    }
}
