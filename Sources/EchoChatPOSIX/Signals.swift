import Glibc

/// A POSIX signal number with names for the ones the programs use.
public struct Signal: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }

    public static let interrupt = Signal(rawValue: SIGINT)
    public static let terminate = Signal(rawValue: SIGTERM)
    public static let hangup = Signal(rawValue: SIGHUP)
    public static let user1 = Signal(rawValue: SIGUSR1)
    public static let user2 = Signal(rawValue: SIGUSR2)
    public static let kill = Signal(rawValue: SIGKILL)
    /// SIGWINCH: the terminal was resized.
    public static let windowChange = Signal(rawValue: SIGWINCH)

    public var description: String {
        switch rawValue {
        case SIGINT: "SIGINT"
        case SIGTERM: "SIGTERM"
        case SIGHUP: "SIGHUP"
        case SIGUSR1: "SIGUSR1"
        case SIGUSR2: "SIGUSR2"
        default: "signal \(rawValue)"
        }
    }
}

public enum Signals {
    /// SIGPIPE kills a process that writes to a socket whose peer has gone;
    /// servers and clients handle EPIPE as an error value instead.
    public static func ignoreBrokenPipe() {
        _ = Glibc.signal(SIGPIPE, SIG_IGN)
    }

    /// A write past RLIMIT_FSIZE then fails with EFBIG instead of killing
    /// the process (SIGXFSZ): a full-disk-like error for one upload, not the
    /// end of the server.
    public static func ignoreFileSizeLimit() {
        _ = Glibc.signal(SIGXFSZ, SIG_IGN)
    }

    /// Blocks `signals` in the calling thread, and so in every thread it creates
    /// afterwards. Call it first thing in main, before any thread exists, then
    /// let `watch` receive them synchronously with sigwait(3).
    public static func block(_ signals: [Signal]) {
        var set = makeSet(signals)
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    /// Starts a thread that waits for `signals` with sigwait(3) and calls
    /// `handler` for each one, on that thread. Handlers may lock and ring
    /// eventfds freely: nothing runs in signal-handler context.
    public static func watch(
        _ signals: [Signal], handler: @escaping @Sendable (Signal) -> Void
    ) throws(SystemError) {
        block(signals)
        let set = SignalSet(value: makeSet(signals))
        _ = try Threads.spawn(name: "signals", stackSize: 64 * 1024, detached: true) {
            var waitSet = set.value
            while true {
                var number: Int32 = 0
                if sigwait(&waitSet, &number) == 0 { handler(Signal(rawValue: number)) }
            }
        }
    }

    /// Sends `signal` to process `pid` (kill(2)).
    @discardableResult
    public static func send(_ signal: Signal, to pid: Int32) -> Bool {
        Glibc.kill(pid, signal.rawValue) == 0
    }

    private static func makeSet(_ signals: [Signal]) -> sigset_t {
        var set = sigset_t()
        sigemptyset(&set)
        for signal in signals { sigaddset(&set, signal.rawValue) }
        return set
    }
}

/// sigset_t is plain data; it is copied into the watcher thread and never shared.
private struct SignalSet: @unchecked Sendable {
    var value: sigset_t
}
