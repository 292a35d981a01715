import EchoChatPOSIX
import Synchronization

public enum LogLevel: String, Sendable, CaseIterable, Comparable {
    case debug, info, warn, error

    var rank: Int {
        switch self {
        case .debug: 0
        case .info: 1
        case .warn: 2
        case .error: 3
        }
    }

    public static func < (a: LogLevel, b: LogLevel) -> Bool { a.rank < b.rank }
}

/// Timestamped, levelled log lines on standard error (stdout is for program
/// output). Each line is one write(2), so lines from different threads never
/// interleave.
///
/// A line a client can cause again and again (a refusal while out of
/// descriptors, say) is logged with a kind (`limitedAs:`): of each kind, at
/// most one line a second is written, and the next one written says how many
/// were left out, so no client can fill the disk through the log.
public final class Logger: Sendable {
    private let currentLevel: Atomic<Int>
    private let limiter = Lock(LogRateLimiter())
    private let clock: @Sendable () -> Int64
    private let output: @Sendable (String) -> Void

    /// `clock` (monotonic nanoseconds) and `output` (one call per line, LF
    /// included) are for tests.
    public init(
        level: LogLevel, clock: @escaping @Sendable () -> Int64 = Clock.monotonicNanoseconds,
        output: @escaping @Sendable (String) -> Void = System.writeToStandardError
    ) {
        currentLevel = Atomic(level.rank)
        self.clock = clock
        self.output = output
    }

    /// The least severe level written; SIGHUP may change it.
    public var level: LogLevel {
        get { LogLevel.allCases[currentLevel.load(ordering: .relaxed)] }
        set { currentLevel.store(newValue.rank, ordering: .relaxed) }
    }

    public func debug(_ message: @autoclosure () -> String) { log(.debug, message) }
    public func info(_ message: @autoclosure () -> String) { log(.info, message) }
    public func warn(_ message: @autoclosure () -> String) { log(.warn, message) }
    public func error(_ message: @autoclosure () -> String) { log(.error, message) }

    /// At most one line a second of the kind `kind` (see `LogRateLimiter`).
    public func info(_ message: @autoclosure () -> String, limitedAs kind: String) { log(.info, message, kind: kind) }
    public func warn(_ message: @autoclosure () -> String, limitedAs kind: String) { log(.warn, message, kind: kind) }

    private func log(_ level: LogLevel, _ message: () -> String, kind: String? = nil) {
        guard level >= self.level else { return }
        var note = ""
        if let kind {
            let now = clock()
            switch limiter.withLock({ $0.admit(kind, now: now) }) {
            case .suppress: return
            case .write(let suppressed, let over): note = LogRateLimiter.note(suppressed: suppressed, over: over)
            }
        }
        let tag = level.rawValue.uppercased()
        output("\(Clock.timestamp()) \(tag)\(tag.count < 5 ? " " : "") \(message())\(note)\n")
    }
}

/// Which rate-limited log lines to write: of each kind, the first line, then
/// nothing until `interval` has passed since the last one written; the next
/// one is written with the count of those left out in between. Pure: the
/// caller passes the time (monotonic nanoseconds) and keeps it behind a lock.
/// Kinds are names written in the code, so the table stays small.
public struct LogRateLimiter: Sendable {
    public enum Verdict: Sendable, Equatable {
        /// Leave the line out (it is counted).
        case suppress
        /// Write it; `suppressed` lines of its kind were left out in the
        /// `over` nanoseconds since the last one written.
        case write(suppressed: Int, over: Int64)
    }

    private struct Kind {
        var lastWritten: Int64
        var suppressed: Int
    }

    public let interval: Int64
    private var kinds: [String: Kind] = [:]

    public init(interval: Int64 = 1_000_000_000) {
        self.interval = interval
    }

    public mutating func admit(_ kind: String, now: Int64) -> Verdict {
        guard var state = kinds[kind] else {
            kinds[kind] = Kind(lastWritten: now, suppressed: 0)
            return .write(suppressed: 0, over: 0)
        }
        let elapsed = now - state.lastWritten
        if elapsed < interval {
            state.suppressed += 1
            kinds[kind] = state
            return .suppress
        }
        kinds[kind] = Kind(lastWritten: now, suppressed: 0)
        return .write(suppressed: state.suppressed, over: elapsed)
    }

    /// What a written line ends with: ` (suppressed 31245 similar lines in
    /// the last 1 s)`, or nothing when none were left out.
    public static func note(suppressed: Int, over nanoseconds: Int64) -> String {
        guard suppressed > 0 else { return "" }
        let seconds = max(1, (nanoseconds + 500_000_000) / 1_000_000_000)
        return " (suppressed \(suppressed) similar line\(suppressed == 1 ? "" : "s") in the last \(seconds) s)"
    }
}
