/// The configurable limits of docs/PROTOCOL.md §3.5 and the decisions they drive.
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
    /// Connections one source address may hold at once (§3.6); 0 = no limit.
    public var maxPerAddress: Int

    public init(
        maxClients: Int = 10_000, maxLine: Int = 4096, maxOutput: Int = 1 << 20,
        idleTimeoutNanoseconds: Int64 = 0, lineTimeoutNanoseconds: Int64 = 0, maxPerAddress: Int = 0
    ) {
        self.maxClients = maxClients
        self.maxLine = maxLine
        self.maxOutput = maxOutput
        self.idleTimeoutNanoseconds = idleTimeoutNanoseconds
        self.lineTimeoutNanoseconds = lineTimeoutNanoseconds
        self.maxPerAddress = maxPerAddress
    }

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

    /// Idle timeout: no byte arrived since `lastInput`. A client the server has
    /// stopped reading from is never idle, so the caller passes `reading`.
    @inline(__always)
    public func isIdle(lastInput: Int64, now: Int64, reading: Bool) -> Bool {
        idleTimeoutNanoseconds > 0 && reading && now - lastInput >= idleTimeoutNanoseconds
    }

    /// Line timeout: an unterminated line has been waiting since `partialSince`.
    @inline(__always)
    public func isLineTimedOut(partialSince: Int64?, now: Int64) -> Bool {
        guard lineTimeoutNanoseconds > 0, let partialSince else { return false }
        return now - partialSince >= lineTimeoutNanoseconds
    }

    /// Whether any per-connection timer is on (a strategy may skip its sweep).
    public var hasTimers: Bool { idleTimeoutNanoseconds > 0 || lineTimeoutNanoseconds > 0 }
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

    /// What follows `* nick left #room`.
    public var suffix: String {
        switch self {
        case .endOfInput, .quit(nil): ""
        case .quit(let text?): " (\(text))"
        case .connectionError: " (connection error)"
        case .idleTimeout: " (idle timeout)"
        case .lineTimeout: " (line timeout)"
        case .slowConsumer: " (slow consumer)"
        }
    }
}
