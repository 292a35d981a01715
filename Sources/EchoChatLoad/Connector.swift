import EchoChatPOSIX

/// The connect phase of one worker: opens its share of the connections at
/// its share of `--connect-rate`, with at most `maxInFlight` connects pending
/// (a burst of thousands of SYNs would overflow the server's backlog and
/// wait for 1 s retransmits), all on the worker's own epoll instance.
enum Connector {
    static let maxInFlight = 256

    /// Returns one descriptor per id (-1 where the connect failed); every open
    /// socket is registered with `poller` for readability with its slot as data.
    /// While others are still connecting, an established socket is registered
    /// with no interest, so a server that talks first (a chat welcome) cannot
    /// be taken for another connect completing.
    static func connectAll(
        ids: [Int], poller: Poller, events: inout PollEvents, control: RunControl, worker: Int, result: WorkerResult
    ) -> [Int32] {
        var descriptors = [Int32](repeating: -1, count: ids.count)
        var startedAt = [Int64](repeating: 0, count: ids.count)
        let begin = Clock.monotonicNanoseconds()
        let deadline = begin + Int64(control.options.timeout * 1e9)
        let perWorkerRate = control.options.connectRate.map { $0 / Double(control.workerCount) }
        var started = 0
        var pending = 0
        var finished = 0
        func fail(_ slot: Int) {
            result.connectFailed += 1
            finished += 1
        }
        while finished < ids.count {
            var now = Clock.monotonicNanoseconds()
            if now >= deadline {
                // Whatever has not connected by now counts as failed.
                for slot in 0..<ids.count where descriptors[slot] >= 0 && startedAt[slot] != 0 {
                    Socket(descriptor: descriptors[slot]).close()
                    descriptors[slot] = -1
                    result.connectFailed += 1
                }
                result.connectFailed += ids.count - started
                break
            }
            var allowed = ids.count
            var nextAllowedAt = Int64.max
            if let rate = perWorkerRate {
                let elapsed = Double(now - begin) / 1e9
                allowed = min(ids.count, Int(elapsed * rate) + 1)
                if allowed < ids.count { nextAllowedAt = begin + Int64(Double(allowed) / rate * 1e9) }
            }
            while started < allowed && pending < maxInFlight {
                let slot = started
                started += 1
                let id = ids[slot]
                now = Clock.monotonicNanoseconds()
                do {
                    let (socket, status) = try Socket.startConnect(to: control.address(forConnection: id), from: control.source(forConnection: id))
                    descriptors[slot] = socket.descriptor
                    switch status {
                    case .done:
                        result.connectLatency.record(Clock.monotonicNanoseconds() - now)
                        try poller.register(socket.descriptor, for: [], data: UInt64(slot))
                        result.connected += 1
                        finished += 1
                    case .wouldBlock:
                        startedAt[slot] = now
                        try poller.register(socket.descriptor, for: .writable, data: UInt64(slot))
                        pending += 1
                    }
                } catch {
                    if descriptors[slot] >= 0 { Socket(descriptor: descriptors[slot]).close() }
                    descriptors[slot] = -1
                    reportOnce(error, worker: worker, failures: result.connectFailed)
                    fail(slot)
                }
            }
            if pending == 0 {
                if started < ids.count && nextAllowedAt != Int64.max { Clock.sleep(untilMonotonicNanoseconds: nextAllowedAt) }
                continue
            }
            let waitUntil = min(deadline, nextAllowedAt, now + 50_000_000)
            let timeout = Int32(max(0, (waitUntil - now + 999_999) / 1_000_000))
            let count = (try? poller.wait(into: &events, timeoutMilliseconds: timeout)) ?? 0
            now = Clock.monotonicNanoseconds()
            for index in 0..<count {
                let slot = Int(events.data(at: index))
                // Only a connect in progress can complete (an established
                // socket reports nothing but errors until the phase ends).
                guard descriptors[slot] >= 0, startedAt[slot] != 0 else { continue }
                let socket = Socket(descriptor: descriptors[slot])
                pending -= 1
                finished += 1
                let began = startedAt[slot]
                startedAt[slot] = 0
                if let error = socket.connectionError() {
                    reportOnce(SystemError("connect \(control.address(forConnection: ids[slot]))", error), worker: worker, failures: result.connectFailed)
                    try? poller.unregister(socket.descriptor)
                    socket.close()
                    descriptors[slot] = -1
                    result.connectFailed += 1
                    continue
                }
                result.connectLatency.record(now - began)
                do {
                    try poller.modify(socket.descriptor, for: [], data: UInt64(slot))
                    result.connected += 1
                } catch {
                    socket.close()
                    descriptors[slot] = -1
                    result.connectFailed += 1
                }
            }
            control.shared[worker].alive.store(result.connected, ordering: .relaxed)
        }
        for slot in 0..<ids.count where descriptors[slot] >= 0 {
            do {
                try poller.modify(descriptors[slot], for: .readable, data: UInt64(slot))
            } catch {
                Socket(descriptor: descriptors[slot]).close()
                descriptors[slot] = -1
                result.connected -= 1
                result.connectFailed += 1
            }
        }
        control.shared[worker].alive.store(result.connected, ordering: .relaxed)
        return descriptors
    }

    /// The first connect failure of each worker goes to stderr; the rest are counted.
    private static func reportOnce(_ error: any Error, worker: Int, failures: Int) {
        if failures == 0 { System.writeToStandardError("echochat-load: worker \(worker): \(error)\n") }
    }
}
