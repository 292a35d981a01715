/// The configurable limits of docs/PROTOCOL.md §3.5 and §3.6 and the decisions they drive.
/// Times are nanoseconds on a monotonic clock the caller reads: the core keeps
/// no clock, so every decision here is a pure function of its arguments.
public struct Limits: Sendable, Equatable {
    /// Connected clients allowed at once (refused clients are not counted).
    public var maxClients: Int
    /// Longest chat line in bytes, not counting LF or a CR right before it.
    public var maxLine: Int
    /// Bytes queued for one client and not yet taken by the kernel.
    public var maxOutput: Int
    /// Close a client from which no byte arrived for this long; 0 = off.
    public var idleTimeoutNanoseconds: Int64
    /// Chat: close a client whose unterminated line stays unfinished this long; 0 = off.
    public var lineTimeoutNanoseconds: Int64
    /// Close a connection whose waiting output none of has been taken for this long; 0 = off.
    public var sendTimeoutNanoseconds: Int64
    /// Chat: lines per second one client may send (a token bucket); 0 = off.
    public var rateLimit: Int
    /// Chat: lines a client may send at once before `rateLimit` applies; 0 = 2 x `rateLimit`.
    public var rateBurst: Int
    /// Connections one source address may hold at once (§3.6); 0 = no limit.
    public var maxPerAddress: Int

    /// Fairness (§3.6): at most this many of one client's lines are handled
    /// per turn before the server serves the others that have input waiting.
    public static let linesPerTurn = 32
    /// Files (§5): an upload's content handed to the store and not yet on
    /// disk; past it the client is not read until the store catches up.
    public static let uploadBacklog = 1 << 20
    /// A download is read from disk in pieces of this size, the next once
    /// the kernel has taken most of the last.
    public static let downloadChunk = 64 * 1024
    /// A client that is told to slow down is told again at most this often.
    public static let slowDownNoticeInterval: Int64 = 60_000_000_000

    public init(
        maxClients: Int = 10_000, maxLine: Int = 4096, maxOutput: Int = 1 << 20,
        idleTimeoutNanoseconds: Int64 = 0, lineTimeoutNanoseconds: Int64 = 0, sendTimeoutNanoseconds: Int64 = 0,
        rateLimit: Int = 0, rateBurst: Int = 0, maxPerAddress: Int = 0
    ) {
        self.maxClients = maxClients
        self.maxLine = maxLine
        self.maxOutput = maxOutput
        self.idleTimeoutNanoseconds = idleTimeoutNanoseconds
        self.lineTimeoutNanoseconds = lineTimeoutNanoseconds
        self.sendTimeoutNanoseconds = sendTimeoutNanoseconds
        self.rateLimit = rateLimit
        self.rateBurst = rateBurst
        self.maxPerAddress = maxPerAddress
    }

    /// The burst in effect: `rateBurst`, or twice `rateLimit` when unset.
    public var effectiveRateBurst: Int { rateBurst > 0 ? rateBurst : 2 * rateLimit }

    /// A new connection is admitted while fewer than `maxClients` are connected;
    /// otherwise it gets `Replies.serverFull` and is closed.
    @inline(__always)
    public func admits(connectedClients: Int) -> Bool { connectedClients < maxClients }

    /// Chat: a client whose queue grew past `maxOutput` is a slow consumer.
    @inline(__always)
    public func isSlowConsumer(queuedBytes: Int) -> Bool { queuedBytes > maxOutput }

    /// Echo: how many more bytes may be read for a client with `queuedBytes`
    /// not yet written back. Zero means stop reading until the queue drains:
    /// backpressure, never loss (§2).
    @inline(__always)
    public func echoReadBudget(queuedBytes: Int) -> Int { max(0, maxOutput - queuedBytes) }

    /// Echo: reading resumes once the queue has drained to half of `maxOutput`,
    /// so a client at the limit does not flip the poller on every write.
    @inline(__always)
    public func echoMayResume(queuedBytes: Int) -> Bool { queuedBytes <= maxOutput / 2 }

    /// Chat fairness (§3.6): a client whose own queued output is past half of
    /// `maxOutput` is not read (nor its waiting lines handled) until it drains,
    /// so a burst of commands with large replies costs its sender, not the room.
    @inline(__always)
    public func chatInputBlocked(queuedBytes: Int) -> Bool { queuedBytes > maxOutput / 2 }

    /// Send timeout: output has waited since `waitingSince` with none of it taken.
    @inline(__always)
    public func isSendTimedOut(waitingSince: Int64?, now: Int64) -> Bool {
        guard sendTimeoutNanoseconds > 0, let waitingSince else { return false }
        return now - waitingSince >= sendTimeoutNanoseconds
    }

    /// Idle timeout: no byte arrived since `lastInput`. A client the server has
    /// stopped reading from is never idle, so the caller passes `reading`
    /// (asked last: it is the costly part).
    @inline(__always)
    public func isIdle(lastInput: Int64, now: Int64, reading: @autoclosure () -> Bool) -> Bool {
        idleTimeoutNanoseconds > 0 && now - lastInput >= idleTimeoutNanoseconds && reading()
    }

    /// Line timeout: an unterminated line has been waiting since `partialSince`.
    @inline(__always)
    public func isLineTimedOut(partialSince: Int64?, now: Int64) -> Bool {
        guard lineTimeoutNanoseconds > 0, let partialSince else { return false }
        return now - partialSince >= lineTimeoutNanoseconds
    }

    /// Whether any per-connection timer is on (a strategy may skip its sweep).
    public var hasTimers: Bool {
        idleTimeoutNanoseconds > 0 || lineTimeoutNanoseconds > 0 || sendTimeoutNanoseconds > 0 || rateLimit > 0
    }
}

/// Why a client's session ended; shown to the room in parentheses (§3.3).
public enum DisconnectReason: Sendable, Equatable {
    /// EOF from the client: no reason shown.
    case endOfInput
    /// `/quit`, with the text after it if there was one.
    case quit(String?)
    case connectionError
    case idleTimeout
    case lineTimeout
    case slowConsumer
    /// Output waited `send-timeout` with none of it taken (§3.6).
    case sendTimeout

    /// The client ended it (`/quit`, end of input), not the server.
    public var isTheClients: Bool {
        switch self {
        case .endOfInput, .quit: true
        default: false
        }
    }

    /// What follows `* nick left #room`.
    public var suffix: String {
        switch self {
        case .endOfInput, .quit(nil): ""
        case .quit(let text?): " (\(text))"
        case .connectionError: " (connection error)"
        case .idleTimeout: " (idle timeout)"
        case .lineTimeout: " (line timeout)"
        case .slowConsumer: " (slow consumer)"
        case .sendTimeout: " (send timeout)"
        }
    }
}

/// The rate limit of §3.6 as a token bucket kept as one number, the
/// theoretical arrival time of the generic cell rate algorithm (GCRA): each
/// line pushes it one interval further, and a client may be at most `burst`
/// intervals ahead of the clock. Pure: the caller passes the time.
public struct RateBucket: Sendable, Equatable {
    private var arrival: Int64 = .min

    public init() {}

    /// Lines `limits` allows now (Int.max when the limit is off).
    public func available(now: Int64, limits: Limits) -> Int {
        guard limits.rateLimit > 0 else { return .max }
        let interval = 1_000_000_000 / Int64(limits.rateLimit)
        let start = max(arrival, now)
        let allowance = now + Int64(limits.effectiveRateBurst) * interval - start
        return allowance <= 0 ? 0 : Int(allowance / interval)
    }

    /// When the next line will be allowed (now if one is).
    public func nextAllowed(now: Int64, limits: Limits) -> Int64 {
        guard limits.rateLimit > 0, available(now: now, limits: limits) == 0 else { return now }
        let interval = 1_000_000_000 / Int64(limits.rateLimit)
        return max(now, arrival + interval - Int64(limits.effectiveRateBurst) * interval)
    }

    /// `lines` were handled.
    public mutating func spend(_ lines: Int, now: Int64, limits: Limits) {
        guard limits.rateLimit > 0, lines > 0 else { return }
        let interval = 1_000_000_000 / Int64(limits.rateLimit)
        arrival = max(arrival, now) + Int64(lines) * interval
    }
}
