import Foundation
import Glibc
import Synchronization
import Testing

/// `@Suite("…", .ownThreads)`: each of the suite's test cases runs on a
/// thread of its own, with at most `OwnThreads.width` of them at once.
///
/// Why: an end-to-end test blocks (on a socket read with a timeout, on a
/// child process) and mostly waits. Swift Testing runs test cases on the
/// global cooperative pool, which has one thread per CPU and never grows, so
/// on this 2-CPU machine two blocked tests held the whole run: the plain
/// `swift test` kept both CPUs half idle for six minutes. Moved to threads of
/// their own (a task executor preference, so the test body is unchanged),
/// the waiting tests overlap, and the pool stays free for the in-memory tests.
///
/// The width is `ECHOCHAT_TEST_THREADS` if set, else twice the CPUs: enough to
/// fill the CPUs with tests that mostly wait, and few enough that the
/// timing in tests (timeouts of a second or more) keeps a wide margin.
/// `ECHOCHAT_TEST_THREADS=0` turns it off (test cases run on the pool).
///
/// Off under a sanitizer, where it hung: under ThreadSanitizer, with test
/// bodies on threads of their own, twice in two runs several threads
/// stopped for good in the Swift runtime's `once_slow` (generic metadata
/// instantiation), a hang this suite never showed on the pool. CI widens
/// the sanitizer runs with separate test processes (`.ci/parallel-test`).
public struct OwnThreads: SuiteTrait, TestTrait, TestScoping {
    public var isRecursive: Bool { true }

    /// How many test cases may run on their own threads at once; 0: off.
    public static let width: Int = {
        if let text = ProcessInfo.processInfo.environment["ECHOCHAT_TEST_THREADS"], let width = Int(text), width >= 0 {
            return width
        }
        if underSanitizer { return 0 }
        return max(2, 2 * ProcessInfo.processInfo.activeProcessorCount)
    }()

    /// Whether ThreadSanitizer or AddressSanitizer is in this process.
    public static var underSanitizer: Bool {
        let symbols: [String] = ["__tsan_init", "__asan_init"]
        return symbols.contains { dlsym(UnsafeMutableRawPointer(bitPattern: 0), $0) != nil }
    }

    public func scopeProvider(for test: Test, testCase: Test.Case?) -> OwnThreads? {
        testCase == nil || Self.width == 0 ? nil : self
    }

    public func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        await OwnThreads.gate.enter()
        defer { OwnThreads.gate.leave() }
        try await withTaskExecutorPreference(KeptThreads.shared) {
            try await function()
        }
    }

    static let gate = Gate(width: max(width, 1))
}

extension Trait where Self == OwnThreads {
    /// See `OwnThreads`.
    public static var ownThreads: OwnThreads { OwnThreads() }
}

/// A counting semaphore that suspends instead of blocking a thread.
final class Gate: Sendable {
    private struct State {
        var free: Int
        var waiting: [CheckedContinuation<Void, Never>] = []
    }
    private let state: Mutex<State>

    init(width: Int) { state = Mutex(State(free: width)) }

    func enter() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let admitted = state.withLock { state -> Bool in
                if state.free > 0 {
                    state.free -= 1
                    return true
                }
                state.waiting.append(continuation)
                return false
            }
            if admitted { continuation.resume() }
        }
    }

    func leave() {
        let next = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if state.waiting.isEmpty {
                state.free += 1
                return nil
            }
            return state.waiting.removeFirst()
        }
        next?.resume()
    }
}

/// A task executor with threads of its own: a job runs on an idle one, or
/// on a new one if none is idle, and a thread that finishes its job waits
/// for the next. So a job that blocks holds only its own thread, and there
/// are never more threads than jobs running at once (at most the gate's
/// width, plus the odd child task). Threads are kept, never ended: a thread
/// per job, ending with it, deadlocked the Swift runtime under
/// ThreadSanitizer (four threads spinning in the metadata cache's
/// `once_slow`, on a lock whose word was 0), a churn of threads no
/// test needs.
public final class KeptThreads: TaskExecutor, @unchecked Sendable {
    static let shared = KeptThreads()
    /// Whether the calling thread is one of these (for the test that checks
    /// where test cases run).
    public static var isCurrent: Bool { Thread.current.threadDictionary[marker] != nil }
    private static let marker = "echochat.kept-thread"

    // `jobs` and `idle` are protected by `condition`.
    private let condition = NSCondition()
    private var jobs: [UnownedJob] = []
    /// Threads waiting for a job.
    private var idle = 0

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        condition.lock()
        jobs.append(job)
        // Every job waiting must have a thread of its own to go to.
        let spawn = jobs.count > idle
        condition.signal()
        condition.unlock()
        if spawn {
            let thread = Thread { [self] in work() }
            thread.stackSize = 8 << 20
            thread.start()
        }
    }

    private func work() {
        Thread.current.threadDictionary[Self.marker] = true
        let executor = asUnownedTaskExecutor()
        condition.lock()
        while true {
            while jobs.isEmpty {
                idle += 1
                condition.wait()
                idle -= 1
            }
            let job = jobs.removeFirst()
            condition.unlock()
            job.runSynchronously(on: executor)
            condition.lock()
        }
    }
}
