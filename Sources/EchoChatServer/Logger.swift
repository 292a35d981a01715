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
public final class Logger: Sendable {
    private let currentLevel: Atomic<Int>

    public init(level: LogLevel) {
        currentLevel = Atomic(level.rank)
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

    private func log(_ level: LogLevel, _ message: () -> String) {
        guard level >= self.level else { return }
        let tag = level.rawValue.uppercased()
        System.writeToStandardError("\(Clock.timestamp()) \(tag)\(tag.count < 5 ? " " : "") \(message())\n")
    }
}
