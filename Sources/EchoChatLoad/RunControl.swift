import EchoChatPOSIX
import Synchronization

/// What a worker publishes while it runs, for the progress line and for the
/// phase hand-offs. Workers store their own counters once per batch of
/// events (relaxed atomics: one plain store each on x86), the main thread reads.
final class WorkerShared: Sendable {
    let messages = Atomic<Int>(0)
    let bytes = Atomic<Int>(0)
    let errors = Atomic<Int>(0)
    let alive = Atomic<Int>(0)
    /// p99 latency of this worker so far, in nanoseconds (refreshed about once a second).
    let p99 = Atomic<Int>(0)
    /// Chat: the largest "(K here)" among this worker's welcome lines.
    let maxWelcome = Atomic<Int>(0)
    /// Chat: lines this worker's senders have written, once no more will be (-1 before).
    let sentFinal = Atomic<Int>(-1)
}

/// Everything one worker hands back at the end.
final class WorkerResult {
    var connectFailed = 0
    var connected = 0
    let connectLatency = Histogram()
    let latency = Histogram()
    /// Chat with `--hosts`: deliveries whose sender is on the receiver's
    /// server, and those that crossed servers.
    let sameServerLatency = Histogram()
    let crossServerLatency = Histogram()
    var windowMessages = 0
    var totalMessages = 0
    var windowBytes = 0
    var errors = 0
    var unexpectedCloses = 0
    var mismatches = 0
    var lost = 0
    // hold
    var aliveAfterConnect = 0
    var dropped = 0
    var aliveAtEnd = 0
    var heldNanoseconds: Int64 = 0
    // chat
    var tracker: ChatTracker?
    var sentBySender: [(id: Int, lines: Int)] = []
    var windowDeliveries = 0
    var deliveredBytes = 0
    var sendSkipped = 0
    var maxSendLag: Int64 = 0
    var notices = 0
}

/// A request to end a run early (SIGINT, SIGTERM), made by the signal
/// watcher thread: every worker ends its measuring at `stopAt` as if that
/// were the planned end, drains what is in flight, and hands back what it
/// measured, so the report covers the run so far.
public final class Interruption: Sendable {
    private let signalNumber = Atomic<Int32>(0)
    private let time = Atomic<Int64>(.max)

    public init() {}

    /// Records the first request; returns false for any later one.
    @discardableResult
    public func request(_ signal: Signal) -> Bool {
        guard signalNumber.compareExchange(expected: 0, desired: signal.rawValue, ordering: .relaxed).exchanged else {
            return false
        }
        time.store(Clock.monotonicNanoseconds(), ordering: .releasing)
        return true
    }

    /// The signal that interrupted the run, once `stopAt` is set.
    public var signal: Signal? {
        stopAt == .max ? nil : Signal(rawValue: signalNumber.load(ordering: .relaxed))
    }

    /// When the run was interrupted (monotonic nanoseconds); Int64.max while it was not.
    /// One relaxed load: workers read it every loop iteration.
    public var stopAt: Int64 { time.load(ordering: .acquiring) }
}

/// The state shared by the main thread and the workers of one run, and the
/// phase hand-offs: every worker `arrive`s, the main thread waits for all of
/// them (`waitForArrivals`), publishes what the next phase needs (a start
/// time, the room size) and lets them `go`.
final class RunControl: Sendable {
    let options: LoadOptions
    /// The servers; connection i goes to the (i mod n)-th.
    let addresses: [SocketAddress]
    /// Connections per loopback source address; nil = no explicit source.
    let perSource: Int?
    let pattern: EchoPattern?
    let workerCount: Int
    let shared: [WorkerShared]
    let results: Lock<[Int: UncheckedResult]>
    /// Upload mode: each client's result.
    let uploadResults = Lock<[Int: UncheckedUploadResult]>([:])
    let startTime = Atomic<Int64>(0)
    let roomSize = Atomic<Int>(0)
    private let arrivals = Doorbell()
    /// One per worker, so a fast worker can never take a slow one's go.
    private let goBells: [Doorbell]
    let finished = Doorbell()
    /// Called by the main thread once every worker holds its connections (--hold).
    let onHolding: (@Sendable () -> Void)?
    let interruption: Interruption

    init(
        options: LoadOptions, addresses: [SocketAddress], perSource: Int?, pattern: EchoPattern?, workers: Int,
        onHolding: (@Sendable () -> Void)?, interruption: Interruption
    ) {
        self.options = options
        self.addresses = addresses
        self.perSource = perSource
        self.pattern = pattern
        self.workerCount = workers
        self.shared = (0..<workers).map { _ in WorkerShared() }
        self.goBells = (0..<workers).map { _ in Doorbell() }
        self.results = Lock([:])
        self.onHolding = onHolding
        self.interruption = interruption
    }

    func address(forConnection id: Int) -> SocketAddress { addresses[id % addresses.count] }

    /// A worker reached the end of a phase; blocks until the main thread says go.
    func arriveAndWait(worker: Int) {
        arrivals.ring()
        _ = goBells[worker].wait(untilMonotonicNanoseconds: Int64.max / 2)
    }

    /// Main thread: waits until every worker has arrived (or the deadline passed: false).
    func waitForArrivals(deadline: Int64) -> Bool {
        for _ in 0..<workerCount where !arrivals.wait(untilMonotonicNanoseconds: deadline) { return false }
        return true
    }

    /// Main thread: waits for one worker's arrival (false at the deadline).
    func waitForArrival(deadline: Int64) -> Bool {
        arrivals.wait(untilMonotonicNanoseconds: deadline)
    }

    func letGo() {
        for bell in goBells { bell.ring() }
    }

    func deliver(_ result: WorkerResult, worker: Int) {
        results.withLock { $0[worker] = UncheckedResult(result) }
        finished.ring()
    }

    func deliverUpload(_ result: UploadResult, worker: Int) {
        uploadResults.withLock { $0[worker] = UncheckedUploadResult(result) }
        finished.ring()
    }

    /// Which 127.0.0.x a connection binds to, if any.
    func source(forConnection id: Int) -> SocketAddress? {
        guard let perSource else { return nil }
        return SocketAddress.loopbackSource(1 + id / perSource)
    }
}

/// A worker's result crossing to the main thread once, under the results lock,
/// after the worker has stopped touching it.
struct UncheckedResult: @unchecked Sendable {
    let value: WorkerResult
    init(_ value: WorkerResult) { self.value = value }
}

/// An upload client's result, crossing to the main thread the same way:
/// once, under the `uploadResults` lock, after its client thread has
/// stopped touching it (the main thread reads it only after joining).
struct UncheckedUploadResult: @unchecked Sendable {
    let value: UploadResult
    init(_ value: UploadResult) { self.value = value }
}
