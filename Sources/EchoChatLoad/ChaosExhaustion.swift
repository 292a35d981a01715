import EchoChatPOSIX

/// The server's RLIMIT_NOFILE while `chaos` has lowered it, so that whatever
/// ends the run (the end of the phase, an error, a second Ctrl-C) puts the
/// original back.
final class LimitGuard: Sendable {
    private let lowered = Lock<(pid: Int32, soft: Int, hard: Int)?>(nil)

    /// Lowers `pid`'s soft limit to `soft`, remembering `original`.
    func lower(pid: Int32, to soft: Int, original: (soft: Int, hard: Int)) throws(SystemError) {
        try lowered.withLock { state throws(SystemError) in
            try Spawn.setOpenFileLimit(of: pid, soft: soft, hard: original.hard)
            state = (pid, original.soft, original.hard)
        }
    }

    /// Puts the original limit back, if it was lowered; true when it was (or
    /// nothing needed restoring).
    @discardableResult
    func restore() -> Bool {
        lowered.withLock { state in
            guard let saved = state else { return true }
            guard (try? Spawn.setOpenFileLimit(of: saved.pid, soft: saved.soft, hard: saved.hard)) != nil else { return false }
            state = nil
            return true
        }
    }
}

struct ExhaustionResult: Sendable {
    var originalSoft = 0
    var originalHard = 0
    /// The soft limit set for the phase.
    var limit = 0
    var descriptorsBefore = 0
    /// Clients opened at once to fill the server, `headroom` more than fit.
    var extraClients = 0
    /// Of those: served (welcomed, or echoed), refused (`! server full`, from
    /// the server's reserve descriptor), unanswered (left in the backlog).
    var served = 0
    var refused = 0
    var unanswered = 0
    /// Served clients still answering at the end of the saturated window.
    var stillServed = 0
    /// Connects made while saturated (a few every 100 ms) and their fate.
    var trickle = 0
    var trickleRefused = 0
    var trickleUnanswered = 0
    var saturatedSeconds = 0.0
    /// The server's CPU time over the saturated window, % of one core.
    var cpuPercent = 0.0
    /// The same, over half a second just before the limit was lowered, with
    /// the same well-behaved load: what saturation adds is the difference.
    var cpuUnsaturatedPercent = 0.0
    var cpuExtraPercent: Double { cpuPercent - cpuUnsaturatedPercent }
    /// A new client was served once the extra clients had left.
    var acceptsAgain = false
    var restored = false
    var error: String?

    /// The server really ran out: some client was refused or left waiting.
    var saturated: Bool { refused + unanswered + trickleRefused + trickleUnanswered > 0 }
}

/// Descriptor exhaustion against a running server: lowers its soft
/// RLIMIT_NOFILE with prlimit(2) so that exactly `headroom` descriptor
/// numbers are free, opens `headroom + extra` clients, keeps connecting a few
/// more every 100 ms while it is saturated and measures its CPU time, checks
/// that the clients it took are still served, closes them all, checks that a
/// new client is served again, and restores the limit.
///
/// The server keeps a reserve descriptor: on EMFILE it frees it, accepts
/// the waiting client, sends `! server full`, closes it and takes the
/// reserve back, and pauses accepting if even that fails. So the extra
/// clients see a refusal (or wait in the backlog), and the CPU stays low:
/// nothing spins on a listener that cannot be accepted from. The CPU is
/// compared with half a second of the same load just before the limit is
/// lowered: a server that spins adds most of a core.
enum ExhaustionChaos {
    static let headroom = 8
    static let extra = 32

    static func run(_ target: ChaosTarget, pid: Int32, until: Int64, limits: LimitGuard) -> ExhaustionResult {
        var result = ExhaustionResult()
        exhaust(target, pid: pid, until: until, limits: limits, result: &result)
        result.restored = limits.restore()
        return result
    }

    private static func exhaust(
        _ target: ChaosTarget, pid: Int32, until: Int64, limits: LimitGuard, result: inout ExhaustionResult
    ) {
        let original: (soft: Int, hard: Int)
        do { original = try Spawn.openFileLimit(of: pid) } catch {
            result.error = "cannot read the server's open-file limit: \(error)"
            return
        }
        result.originalSoft = original.soft
        result.originalHard = original.hard

        // Let the connections closed by the previous phase go, then measure
        // what the well-behaved load costs the server unsaturated.
        settle(pid: pid, deadline: Clock.monotonicNanoseconds() + 2_000_000_000)
        let quietStart = Clock.monotonicNanoseconds()
        let quietCPU = ServerSampler.cpuSeconds(pid: pid)
        Clock.sleep(nanoseconds: 500_000_000)
        let quietSeconds = Double(Clock.monotonicNanoseconds() - quietStart) / 1e9
        result.cpuUnsaturatedPercent = 100 * (ServerSampler.cpuSeconds(pid: pid) - quietCPU) / quietSeconds
        guard let open = ServerSampler.descriptors(pid: pid) else {
            result.error = "cannot list /proc/\(pid)/fd"
            return
        }
        result.descriptorsBefore = open.count
        result.limit = limit(open: open, free: headroom)
        guard result.limit < original.soft else {
            result.error = "the server's open-file limit (\(original.soft)) is already below what it has open plus \(headroom)"
            return
        }
        do { try limits.lower(pid: pid, to: result.limit, original: original) } catch {
            result.error = "cannot lower the server's open-file limit: \(error)"
            return
        }

        // Fill it, and more.
        var clients: [ProbeClient] = []
        for _ in 0..<(headroom + extra) {
            guard let client = ProbeClient.open(target) else { continue }
            clients.append(client)
        }
        result.extraClients = clients.count
        ProbeClient.awaitFirstLines(&clients, deadline: Clock.monotonicNanoseconds() + 1_000_000_000)
        for client in clients {
            switch client.verdict(chat: target.chat) {
            case .served: result.served += 1
            case .refused: result.refused += 1
            case .unanswered: result.unanswered += 1
            }
        }

        // Saturated: a trickle of new clients, the server's CPU measured.
        let windowStart = Clock.monotonicNanoseconds()
        let windowEnd = max(windowStart + 1_000_000_000, until - 500_000_000)
        let cpuBefore = ServerSampler.cpuSeconds(pid: pid)
        var trickle: [ProbeClient] = []
        var nextTrickle = windowStart
        while true {
            let now = Clock.monotonicNanoseconds()
            if now >= target.stop(windowEnd) { break }
            if now >= nextTrickle {
                nextTrickle = now + 100_000_000
                for _ in 0..<4 {
                    guard let client = ProbeClient.open(target, timeout: 0.5) else { continue }
                    trickle.append(client)
                    result.trickle += 1
                }
            }
            ProbeClient.awaitFirstLines(&trickle, deadline: min(nextTrickle, target.stop(windowEnd)))
            // A refused client is done; one left waiting a second counts as unanswered.
            let now2 = Clock.monotonicNanoseconds()
            trickle.removeAll { client in
                let verdict = client.verdict(chat: target.chat)
                if verdict == .refused || client.closed {
                    if verdict == .refused { result.trickleRefused += 1 }
                    client.socket.close()
                    return true
                }
                if now2 - client.openedAt >= 1_000_000_000 {
                    if verdict == .unanswered { result.trickleUnanswered += 1 }
                    client.socket.close()
                    return true
                }
                return false
            }
        }
        let windowSeconds = Double(Clock.monotonicNanoseconds() - windowStart) / 1e9
        result.saturatedSeconds = windowSeconds
        result.cpuPercent = windowSeconds > 0 ? 100 * (ServerSampler.cpuSeconds(pid: pid) - cpuBefore) / windowSeconds : 0

        // The clients it took are still served.
        var served = clients.filter { $0.verdict(chat: target.chat) == .served }
        for index in served.indices { served[index].ask(chat: target.chat) }
        ProbeClient.awaitAnswers(&served, chat: target.chat, deadline: Clock.monotonicNanoseconds() + 2_000_000_000)
        result.stillServed = served.filter(\.answered).count

        // Everyone leaves; a newcomer is served again.
        for client in clients + trickle { client.socket.close() }
        settle(pid: pid, deadline: Clock.monotonicNanoseconds() + 2_000_000_000)
        if var newcomer = [ProbeClient.open(target)].compactMap({ $0 }).first {
            var one = [newcomer]
            ProbeClient.awaitFirstLines(&one, deadline: Clock.monotonicNanoseconds() + 3_000_000_000)
            newcomer = one[0]
            result.acceptsAgain = newcomer.verdict(chat: target.chat) == .served
            newcomer.socket.close()
        }
    }

    /// The soft limit under which exactly `free` descriptor numbers are
    /// unused, given the numbers open now (a new descriptor takes the lowest
    /// free number, and must be below the soft limit).
    static func limit(open: [Int], free: Int) -> Int {
        let taken = Set(open)
        var number = 0
        var found = 0
        while true {
            if !taken.contains(number) {
                found += 1
                if found == free { return number + 1 }
            }
            number += 1
        }
    }

    /// Waits until the server's descriptor count stops falling (three equal
    /// samples 100 ms apart) or the deadline.
    static func settle(pid: Int32, deadline: Int64) {
        var last = -1
        var same = 0
        while Clock.monotonicNanoseconds() < deadline {
            let count = ServerSampler.descriptorCount(pid: pid) ?? 0
            same = count == last ? same + 1 : 0
            if same >= 2 { return }
            last = count
            Clock.sleep(nanoseconds: 100_000_000)
        }
    }
}

/// A client that checks whether the server serves it: in chat its first
/// line is the welcome; in echo it sends `ping` and the echo is its first
/// line. `! server full` is a refusal.
struct ProbeClient {
    enum Verdict: Equatable { case served, refused, unanswered }

    let socket: Socket
    let openedAt: Int64
    var bytes: [UInt8] = []
    var closed = false
    /// Lines after the first, for `answered`.
    var answered = false

    static func open(_ target: ChaosTarget, timeout: Double = 1) -> ProbeClient? {
        guard let socket = ChaosSocket.open(target.address, timeout: timeout) else { return nil }
        if !target.chat && !ChaosSocket.send(socket, "ping\n") { return nil }
        return ProbeClient(socket: socket, openedAt: Clock.monotonicNanoseconds())
    }

    var firstLine: String? {
        guard let end = bytes.firstIndex(of: 0x0A) else { return nil }
        return String(decoding: bytes[..<end], as: UTF8.self)
    }

    func verdict(chat: Bool) -> Verdict {
        guard let line = firstLine else { return .unanswered }
        if line.hasPrefix("! server full") { return .refused }
        return (chat ? line.hasPrefix("* welcome ") : line == "ping") ? .served : .unanswered
    }

    /// Asks something whose answer proves the server still serves it.
    mutating func ask(chat: Bool) {
        _ = ChaosSocket.writeSome(socket, Array((chat ? "/rooms\n" : "pong\n").utf8))
    }

    /// Reads what has arrived (up to 64 KiB kept).
    mutating func read() {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let result = buffer.withUnsafeMutableBytes { try? socket.read(into: $0) }
            switch result {
            case .bytes(let count)?:
                if bytes.count < 65536 { bytes += buffer[0..<count] }
            case .wouldBlock?: return
            default:
                closed = true
                return
            }
        }
    }

    /// Polls `clients` until each has a first line (or closed), or the deadline.
    static func awaitFirstLines(_ clients: inout [ProbeClient], deadline: Int64) {
        readUntil(&clients, deadline: deadline) { $0.firstLine != nil }
    }

    /// Polls until each client's answer to `ask` has arrived, or the deadline.
    static func awaitAnswers(_ clients: inout [ProbeClient], chat: Bool, deadline: Int64) {
        let answer = Array((chat ? "\n* rooms: " : "\npong\n").utf8)
        readUntil(&clients, deadline: deadline) { $0.holds(answer) }
        for index in clients.indices { clients[index].answered = clients[index].holds(answer) }
    }

    func holds(_ needle: [UInt8]) -> Bool {
        guard bytes.count >= needle.count else { return false }
        return (0...(bytes.count - needle.count)).contains { bytes[$0..<($0 + needle.count)].elementsEqual(needle) }
    }

    private static func readUntil(_ clients: inout [ProbeClient], deadline: Int64, done: (ProbeClient) -> Bool) {
        while true {
            let waiting = clients.indices.filter { !clients[$0].closed && !done(clients[$0]) }
            let now = Clock.monotonicNanoseconds()
            if waiting.isEmpty || now >= deadline { return }
            let timeout = Int32(min(50, (deadline - now) / 1_000_000 + 1))
            let ready = (try? Poll.readable(waiting.map { clients[$0].socket.descriptor }, timeoutMilliseconds: timeout)) ?? []
            for (position, index) in waiting.enumerated() where position < ready.count && ready[position] {
                clients[index].read()
            }
        }
    }
}
