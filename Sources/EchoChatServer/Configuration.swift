import EchoChatCore
import EchoChatPOSIX

/// Every setting of `echochat-server`, with its default. Flags and the config
/// file set the same fields through the same table (`ServerOptions.table`).
public struct ServerConfiguration: Sendable, Equatable {
    public var host = "127.0.0.1"
    public var port = 7007
    public var mode: ServerMode = .echo
    public var strategy: Strategy = .epoll
    public var maxClients = 10_000
    public var maxLine = 4096
    public var maxOutput = 1 << 20
    /// Seconds; 0 = off.
    public var idleTimeout = 0.0
    /// Seconds; 0 = off.
    public var lineTimeout = 0.0
    /// Seconds to deliver what is owed after SIGTERM/SIGINT.
    public var shutdownTimeout = 5.0
    /// Seconds a client whose session is over (quit, EOF, timeout, refusal)
    /// has to take its last output before the server closes it anyway.
    public var closeTimeout = 30.0
    public var logLevel: LogLevel = .info
    /// Pool strategy: worker threads; nil = the CPUs this process may use, at least 2.
    public var workers: Int?
    /// Thread strategy: stack size of each client thread, in bytes.
    public var threadStack = 256 * 1024
    public var configFile: String?
    /// Detach and run in the background (the launcher exits once it listens).
    public var daemon = false
    /// Written after the listener is bound, locked while running, removed at exit.
    public var pidFile: String?
    /// Log lines (and anything else on stderr) go here; SIGHUP reopens it.
    public var logFile: String?

    public init() {}

    /// The pool's worker count after applying the default.
    public var effectiveWorkers: Int { workers ?? max(2, Threads.availableCores) }

    /// The limits the protocol core decides with.
    public var limits: Limits {
        Limits(
            maxClients: maxClients, maxLine: maxLine, maxOutput: maxOutput,
            idleTimeoutNanoseconds: Int64(idleTimeout * 1e9), lineTimeoutNanoseconds: Int64(lineTimeout * 1e9))
    }
}

/// A bad flag, value or config line. The message is the text after `Error: `.
public struct UsageError: Error, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Parsers for the kinds of value settings take; each error says what was expected.
enum ValueParser {
    static func integer(_ text: String, _ name: String, in range: ClosedRange<Int>) throws(UsageError) -> Int {
        guard let value = Int(text), range.contains(value) else {
            throw UsageError("invalid value '\(text)' for \(name): expected an integer from \(range.lowerBound) to \(range.upperBound)")
        }
        return value
    }

    /// Bytes: an integer with an optional binary suffix K, M or G (KiB, MiB, GiB).
    static func size(_ text: String, _ name: String, minimum: Int) throws(UsageError) -> Int {
        var digits = Substring(text)
        var multiplier = 1
        for (suffixes, factor) in [(["kib", "k", "kb"], 1 << 10), (["mib", "m", "mb"], 1 << 20), (["gib", "g", "gb"], 1 << 30)] {
            if let suffix = suffixes.first(where: { text.lowercased().hasSuffix($0) }) {
                digits = text.dropLast(suffix.count)
                multiplier = factor
                break
            }
        }
        guard let value = Int(digits), value >= 0, value <= Int(Int32.max) / multiplier * 1024,
              value * multiplier >= minimum
        else {
            throw UsageError("invalid value '\(text)' for \(name): expected a size in bytes of at least \(minimum) (suffixes K, M, G allowed)")
        }
        return value * multiplier
    }

    /// Seconds: a non-negative decimal number.
    static func seconds(_ text: String, _ name: String) throws(UsageError) -> Double {
        guard let value = Double(text), value >= 0, value.isFinite, value <= 31_536_000 else {
            throw UsageError("invalid value '\(text)' for \(name): expected a number of seconds (0 or more)")
        }
        return value
    }

    static func choice<T: RawRepresentable & CaseIterable>(_ text: String, _ name: String, as: T.Type) throws(UsageError) -> T
    where T.RawValue == String {
        guard let value = T(rawValue: text) else {
            let names = T.allCases.map(\.rawValue).joined(separator: ", ")
            throw UsageError("invalid value '\(text)' for \(name): expected one of \(names)")
        }
        return value
    }

    static func boolean(_ text: String, _ name: String) throws(UsageError) -> Bool {
        switch text.lowercased() {
        case "yes", "true", "on", "1": return true
        case "no", "false", "off", "0": return false
        default: throw UsageError("invalid value '\(text)' for \(name): expected yes or no")
        }
    }

    static func path(_ text: String, _ name: String) throws(UsageError) -> String {
        guard !text.isEmpty, !text.contains("\0") else {
            throw UsageError("invalid value '\(text)' for \(name): expected a file path")
        }
        return text
    }

    static func host(_ text: String, _ name: String) throws(UsageError) -> String {
        guard !text.isEmpty, !text.contains(where: { $0 == " " || $0 == "\t" }) else {
            throw UsageError("invalid value '\(text)' for \(name): expected an address or host name")
        }
        return text
    }
}
