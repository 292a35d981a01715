import EchoChatPOSIX

/// One echo connection as its worker sees it. Plain data in one array per
/// worker: the hot path touches no reference counts and allocates nothing.
struct EchoConnection {
    var fd: Int32 = -1
    var open = false
    var wantOut = false
    var rxBad = false
    /// Global connection id: selects the message pattern.
    var id = 0
    /// `(id mod period) * 7 mod period`: the pattern offset of message 0.
    var patternOffset = 0
    /// Messages queued for sending (sent or not yet).
    var enqueued = 0
    var sentBytes = 0
    /// Messages received completely.
    var received = 0
    /// Bytes of message `received` received so far.
    var rxOffset = 0
    /// Open loop: messages whose scheduled time has come.
    var due = 0
}

extension EchoConnection {
    /// Checks `chunk`, the next bytes received, against what was sent, as it
    /// arrives (no message is buffered): calls `complete(message, bad)` for
    /// every message that is now whole, `bad` when any of its bytes differed.
    /// Returns false when the chunk holds bytes that were never sent (more than
    /// came back before, a duplicate, a server talking on its own); the rest of
    /// the chunk is then not examined.
    @inline(__always)
    mutating func absorb(
        _ chunk: UnsafeRawBufferPointer, size: Int, patternBase: UnsafeRawPointer,
        complete: (_ message: Int, _ bad: Bool) -> Void
    ) -> Bool {
        guard let base = chunk.baseAddress else { return true }
        var position = 0
        while position < chunk.count {
            let available = sentBytes - received * size - rxOffset
            if available <= 0 { return false }
            let take = min(chunk.count - position, size - rxOffset, available)
            if !rxBad {
                var template = received % EchoPattern.period + patternOffset
                if template >= EchoPattern.period { template -= EchoPattern.period }
                if !bytesEqual(base + position, patternBase + template * size + rxOffset, count: take) { rxBad = true }
            }
            position += take
            rxOffset += take
            if rxOffset == size {
                let message = received
                let bad = rxBad
                received = message + 1
                rxOffset = 0
                rxBad = false
                complete(message, bad)
            }
        }
        return true
    }

    /// The connection for global id `id`, with nothing sent yet.
    init(id: Int, fd: Int32 = -1) {
        self.init()
        self.fd = fd
        self.open = fd >= 0
        self.id = id
        self.patternOffset = (id % EchoPattern.period) * 7 % EchoPattern.period
    }
}

/// A worker of the echo workload: its own epoll instance, its share of the
/// connections, one 64 KiB read buffer, one histogram.
///
/// Closed loop: each connection keeps `pipeline` messages in flight; each
/// answer completed queues the next (latency from the moment it was queued).
/// Open loop (`--rate`): message m of local connection j is due at
/// `t0 + (m * n + j) * gap` (the worker's n connections staggered over the
/// period); it is sent then, or as soon as the pipeline cap allows, and its
/// latency counts from the due time, so a slow server cannot hide its queueing
/// (no coordinated omission).
///
/// Every byte that comes back is compared with what was sent, as it arrives.
enum EchoWorker {
    static func run(worker: Int, ids: [Int], control: RunControl) {
        let result = WorkerResult()
        let phases = control.options.hold ? 2 : 1
        guard let poller = try? Poller() else {
            result.connectFailed = ids.count
            for _ in 0..<phases { control.arriveAndWait(worker: worker) }
            control.deliver(result, worker: worker)
            return
        }
        var events = PollEvents(capacity: 512)
        let descriptors = Connector.connectAll(
            ids: ids, poller: poller, events: &events, control: control, worker: worker, result: result)
        let count = ids.count
        let connections = UnsafeMutablePointer<EchoConnection>.allocate(capacity: max(1, count))
        for slot in 0..<count {
            connections.advanced(by: slot).initialize(to: EchoConnection(id: ids[slot], fd: descriptors[slot]))
        }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 64)
        defer {
            for slot in 0..<count where connections[slot].open { Socket(descriptor: connections[slot].fd).close() }
            connections.deallocate()
            buffer.deallocate()
            poller.close()
        }

        control.arriveAndWait(worker: worker)
        let start = control.startTime.load(ordering: .acquiring)
        if control.options.hold {
            var hold = HoldLoop(poller: poller, connections: connections, count: count, buffer: buffer)
            hold.run(events: &events, control: control, worker: worker, start: start, result: result)
        } else {
            var loop = EchoLoop(
                poller: poller, connections: connections, count: count, options: control.options,
                pattern: control.pattern!, buffer: buffer, histogram: result.latency, start: start)
            loop.live = result.connected
            loop.run(events: &events, shared: control.shared[worker], interruption: control.interruption)
            result.windowMessages = loop.windowMessages
            result.totalMessages = loop.totalMessages
            result.windowBytes = loop.windowMessages * control.options.size
            result.mismatches = loop.mismatches
            result.unexpectedCloses = loop.unexpectedCloses
            result.errors = loop.unexpectedCloses
            result.lost = loop.lost
            result.maxSendLag = loop.maxLag
        }
        control.deliver(result, worker: worker)
    }
}

struct EchoLoop {
    let poller: Poller
    let connections: UnsafeMutablePointer<EchoConnection>
    let count: Int
    let size: Int
    let depth: Int
    let limit: Int
    let patternBase: UnsafeRawPointer
    let slots: Int
    let buffer: UnsafeMutableRawBufferPointer
    let timestamps: UnsafeMutablePointer<Int64>
    let histogram: Histogram
    let openLoop: Bool
    let start: Int64
    let measureFrom: Int64
    /// The planned end of the measuring, or an interruption's time if earlier.
    var end: Int64
    let gap: Double
    let messagesMode: Bool

    var now: Int64 = 0
    var running = true
    var inWindow = false
    var outstanding = 0
    var live = 0
    var windowMessages = 0
    var totalMessages = 0
    var mismatches = 0
    var unexpectedCloses = 0
    var lost = 0
    var scheduled = 0
    var nextDue = Int64.max
    var maxLag: Int64 = 0

    static let drainNanoseconds: Int64 = 2_000_000_000

    init(
        poller: Poller, connections: UnsafeMutablePointer<EchoConnection>, count: Int, options: LoadOptions,
        pattern: EchoPattern, buffer: UnsafeMutableRawBufferPointer, histogram: Histogram, start: Int64
    ) {
        self.poller = poller
        self.connections = connections
        self.count = count
        self.size = options.size
        self.depth = options.pipeline
        self.limit = options.messages ?? Int.max
        self.messagesMode = options.messages != nil
        self.patternBase = UnsafeRawPointer(pattern.bytes.baseAddress!)
        self.slots = EchoPattern.period + pattern.extra
        self.buffer = buffer
        self.timestamps = .allocate(capacity: max(1, count * options.pipeline))
        self.histogram = histogram
        self.openLoop = options.rate != nil
        self.start = start
        self.measureFrom = start + Int64(options.effectiveWarmup * 1e9)
        self.end = options.messages != nil ? start + Int64(options.timeout * 1e9) : measureFrom + Int64(options.duration * 1e9)
        self.gap = options.rate.map { 1e9 / ($0 * Double(max(1, count))) } ?? 0
        // Open loop: the first message is due at the start.
        self.nextDue = options.rate != nil ? start : Int64.max
    }

    @inline(__always)
    func template(_ c: UnsafeMutablePointer<EchoConnection>, _ message: Int) -> Int {
        let t = message % EchoPattern.period + c.pointee.patternOffset
        return t >= EchoPattern.period ? t - EchoPattern.period : t
    }

    @inline(__always)
    func scheduledTime(slot: Int, message: Int) -> Int64 {
        start + Int64((Double(message) * Double(count) + Double(slot)) * gap)
    }

    mutating func run(events: inout PollEvents, shared: WorkerShared, interruption: Interruption) {
        now = Clock.monotonicNanoseconds()
        defer { timestamps.deallocate() }
        if !openLoop {
            for slot in 0..<count where connections[slot].open {
                let c = connections + slot
                let initial = min(depth, limit)
                for index in 0..<initial { timestamps[slot * depth + index] = now }
                c.pointee.enqueued = initial
                outstanding += initial
                flush(slot)
            }
        }
        var drainDeadline = Int64.max
        var nextPublish = now + 100_000_000
        var nextPercentile = now + 1_000_000_000
        while true {
            now = Clock.monotonicNanoseconds()
            end = min(end, interruption.stopAt)
            if running && (now >= end || (messagesMode && outstanding == 0 && (!openLoop || nextDue == Int64.max))) {
                running = false
                drainDeadline = now + Self.drainNanoseconds
            }
            if !running && (outstanding == 0 || now >= drainDeadline) { break }
            if live == 0 { break }
            if openLoop && running { scheduleDue() }

            var until = min(nextPublish, running ? end : drainDeadline)
            if openLoop && running { until = min(until, nextDue) }
            var ready = 0
            if until - now < 1_000_000 && openLoop {
                // epoll_wait(2) counts in milliseconds: poll, then sleep
                // precisely, so sends stay on schedule to within ~0.1 ms.
                ready = (try? poller.wait(into: &events, timeoutMilliseconds: 0)) ?? 0
                if ready == 0 {
                    if until > now { Clock.sleep(untilMonotonicNanoseconds: min(until, now + 200_000)) }
                    continue
                }
            } else {
                let timeout = Int32(max(0, min(100, (until - now + 999_999) / 1_000_000)))
                ready = (try? poller.wait(into: &events, timeoutMilliseconds: timeout)) ?? 0
            }
            now = Clock.monotonicNanoseconds()
            inWindow = now >= measureFrom && now < end
            for index in 0..<ready {
                let slot = Int(events.data(at: index))
                let ready = events.events(at: index)
                if !connections[slot].open { continue }
                if ready.contains(.readable) { handleRead(slot) }
                if ready.contains(.writable) && connections[slot].open { flush(slot) }
                if !ready.contains(.readable) && connections[slot].open && !ready.isDisjoint(with: [.error, .hangup]) {
                    fail(slot)
                }
            }
            if now >= nextPublish {
                nextPublish = now + 100_000_000
                shared.messages.store(totalMessages, ordering: .relaxed)
                shared.bytes.store(totalMessages * size, ordering: .relaxed)
                shared.errors.store(unexpectedCloses + mismatches, ordering: .relaxed)
                shared.alive.store(live, ordering: .relaxed)
                if now >= nextPercentile {
                    nextPercentile = now + 1_000_000_000
                    shared.p99.store(Int(histogram.value(atPercentile: 99)), ordering: .relaxed)
                }
            }
        }
        // Whatever is still in flight after the drain never came back.
        lost += outstanding
        outstanding = 0
        shared.messages.store(totalMessages, ordering: .relaxed)
        shared.errors.store(unexpectedCloses + mismatches, ordering: .relaxed)
        shared.alive.store(live, ordering: .relaxed)
    }

    /// Open loop: marks every message whose time has come as due and sends it
    /// if the connection's pipeline has room.
    mutating func scheduleDue() {
        while true {
            let message = scheduled / count
            let slot = scheduled - message * count
            if message >= limit {
                nextDue = Int64.max
                return
            }
            let at = scheduledTime(slot: slot, message: message)
            if at >= end && !messagesMode {
                nextDue = Int64.max
                return
            }
            if at > now {
                nextDue = at
                return
            }
            if now - at > maxLag { maxLag = now - at }
            scheduled += 1
            let c = connections + slot
            if c.pointee.open {
                c.pointee.due += 1
                topUp(slot)
            }
        }
    }

    @inline(__always)
    mutating func topUp(_ slot: Int) {
        let c = connections + slot
        let target = min(c.pointee.due, c.pointee.received + depth)
        if target > c.pointee.enqueued {
            outstanding += target - c.pointee.enqueued
            c.pointee.enqueued = target
            if !c.pointee.wantOut { flush(slot) }
        }
    }

    @inline(__always)
    mutating func handleRead(_ slot: Int) {
        let c = connections + slot
        let outcome: ReadResult
        do { outcome = try Socket(descriptor: c.pointee.fd).read(into: buffer) } catch {
            fail(slot)
            return
        }
        switch outcome {
        case .wouldBlock: return
        case .endOfFile: fail(slot)
        case .bytes(let received): consume(slot, received)
        }
    }

    @inline(__always)
    mutating func consume(_ slot: Int, _ received: Int) {
        let chunk = UnsafeRawBufferPointer(start: buffer.baseAddress, count: received)
        var completed = 0
        let intact = connections[slot].absorb(chunk, size: size, patternBase: patternBase) { message, bad in
            completed += 1
            complete(slot, message: message, bad: bad)
        }
        if !intact {
            // Bytes that were never sent: the stream is corrupt from here on.
            mismatches += 1
            fail(slot)
            return
        }
        guard completed > 0 else { return }
        let c = connections + slot
        if openLoop {
            topUp(slot)
            return
        }
        if running {
            // Closed loop: each answer queues the next message.
            let more = min(completed, limit - c.pointee.enqueued)
            for index in 0..<max(0, more) {
                timestamps[slot * depth + (c.pointee.enqueued + index) % depth] = now
            }
            if more > 0 {
                c.pointee.enqueued += more
                outstanding += more
            }
        }
        if !c.pointee.wantOut { flush(slot) }
    }

    @inline(__always)
    mutating func complete(_ slot: Int, message: Int, bad: Bool) {
        if bad { mismatches += 1 }
        if inWindow {
            let sentAt = openLoop ? scheduledTime(slot: slot, message: message) : timestamps[slot * depth + message % depth]
            histogram.record(now - sentAt)
            windowMessages += 1
        }
        totalMessages += 1
        outstanding -= 1
    }

    /// Writes what is queued, straight from the shared pattern (one send(2)
    /// for a whole pipeline); arms EPOLLOUT only while the kernel is full.
    mutating func flush(_ slot: Int) {
        let c = connections + slot
        let socket = Socket(descriptor: c.pointee.fd)
        let target = c.pointee.enqueued * size
        while c.pointee.sentBytes < target {
            let message = c.pointee.sentBytes / size
            let offset = c.pointee.sentBytes - message * size
            let t = template(c, message)
            let run = min(c.pointee.enqueued - message, slots - t)
            let length = run * size - offset
            let bytes = UnsafeRawBufferPointer(start: patternBase + t * size + offset, count: length)
            do {
                guard case .done(let written) = try socket.write(bytes) else { break }
                c.pointee.sentBytes += written
                if written < length { break }
            } catch {
                fail(slot)
                return
            }
        }
        let needOut = c.pointee.sentBytes < target
        if needOut != c.pointee.wantOut {
            c.pointee.wantOut = needOut
            do {
                try poller.modify(c.pointee.fd, for: needOut ? [.readable, .writable] : .readable, data: UInt64(slot))
            } catch {
                fail(slot)
            }
        }
    }

    /// The connection closed or failed: count it, and what it still owed us.
    mutating func fail(_ slot: Int) {
        let c = connections + slot
        guard c.pointee.open else { return }
        try? poller.unregister(c.pointee.fd)
        Socket(descriptor: c.pointee.fd).close()
        c.pointee.open = false
        unexpectedCloses += 1
        let owed = c.pointee.enqueued - c.pointee.received
        lost += owed
        outstanding -= owed
        live -= 1
    }
}

/// `--hold`: each connection proves it is alive with one small echo, stays
/// idle for the duration (any event on it then is a drop or stray bytes), and
/// proves it again at the end.
struct HoldLoop {
    let poller: Poller
    let connections: UnsafeMutablePointer<EchoConnection>
    let count: Int
    let buffer: UnsafeMutableRawBufferPointer
    static let probeSize = 16

    static func probe(round: Int, id: Int) -> [UInt8] {
        var digits = Array(String(id).utf8)
        while digits.count < 10 { digits.insert(0x30, at: 0) }
        return Array("hold".utf8) + [UInt8(0x30 + round % 10)] + digits.suffix(10) + [0x0A]
    }

    mutating func run(events: inout PollEvents, control: RunControl, worker: Int, start: Int64, result: WorkerResult) {
        let verifyTimeout = Int64(min(control.options.timeout, 20) * 1e9)
        result.aliveAfterConnect = verify(round: 1, events: &events, deadline: start + verifyTimeout, result: result)
        control.shared[worker].alive.store(result.aliveAfterConnect, ordering: .relaxed)
        control.arriveAndWait(worker: worker)
        let holdStart = Clock.monotonicNanoseconds()
        let holdEnd = holdStart + Int64(control.options.duration * 1e9)
        while true {
            let now = Clock.monotonicNanoseconds()
            if now >= min(holdEnd, control.interruption.stopAt) { break }
            let timeout = Int32(min(200, (holdEnd - now + 999_999) / 1_000_000))
            let ready = (try? poller.wait(into: &events, timeoutMilliseconds: timeout)) ?? 0
            for index in 0..<ready {
                let slot = Int(events.data(at: index))
                guard connections[slot].open else { continue }
                let socket = Socket(descriptor: connections[slot].fd)
                switch try? socket.read(into: buffer) {
                case .wouldBlock: continue
                case .bytes:
                    result.mismatches += 1  // nobody asked for these bytes
                default:
                    result.dropped += 1
                    close(slot)
                }
            }
            control.shared[worker].alive.store(count - result.connectFailed - result.dropped, ordering: .relaxed)
        }
        result.heldNanoseconds = Clock.monotonicNanoseconds() - holdStart
        result.aliveAtEnd = verify(round: 2, events: &events, deadline: Clock.monotonicNanoseconds() + verifyTimeout, result: result)
        control.shared[worker].alive.store(result.aliveAtEnd, ordering: .relaxed)
        result.errors += result.dropped
        result.unexpectedCloses = result.dropped
    }

    /// Sends a probe on every open connection and waits for each echo;
    /// returns how many came back intact.
    mutating func verify(round: Int, events: inout PollEvents, deadline: Int64, result: WorkerResult) -> Int {
        var got = [Int](repeating: 0, count: count)
        var bad = [Bool](repeating: false, count: count)
        var waiting = 0
        for slot in 0..<count where connections[slot].open {
            let probe = Self.probe(round: round, id: connections[slot].id)
            let written = probe.withUnsafeBytes { try? Socket(descriptor: connections[slot].fd).write($0) }
            if written != .done(Self.probeSize) {
                result.dropped += 1
                close(slot)
                continue
            }
            waiting += 1
        }
        var alive = 0
        while waiting > 0 {
            let now = Clock.monotonicNanoseconds()
            if now >= deadline { break }
            let timeout = Int32(min(100, (deadline - now + 999_999) / 1_000_000))
            let ready = (try? poller.wait(into: &events, timeoutMilliseconds: timeout)) ?? 0
            for index in 0..<ready {
                let slot = Int(events.data(at: index))
                guard connections[slot].open, got[slot] < Self.probeSize else { continue }
                let socket = Socket(descriptor: connections[slot].fd)
                switch try? socket.read(into: buffer) {
                case .wouldBlock: continue
                case .bytes(let n):
                    let probe = Self.probe(round: round, id: connections[slot].id)
                    for offset in 0..<n {
                        if got[slot] + offset >= Self.probeSize || buffer[offset] != probe[got[slot] + offset] {
                            bad[slot] = true
                        }
                    }
                    got[slot] += n
                    if got[slot] >= Self.probeSize {
                        waiting -= 1
                        if bad[slot] { result.mismatches += 1 } else { alive += 1 }
                    }
                default:
                    result.dropped += 1
                    close(slot)
                    waiting -= 1
                }
            }
        }
        return alive
    }

    mutating func close(_ slot: Int) {
        guard connections[slot].open else { return }
        try? poller.unregister(connections[slot].fd)
        Socket(descriptor: connections[slot].fd).close()
        connections[slot].open = false
    }
}
