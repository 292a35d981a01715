import EchoChatPOSIX
import Synchronization

/// Samples a process's VmRSS and thread count every 20 ms on its own thread,
/// and, when asked, its open descriptors (the entries of /proc/PID/fd) every
/// 100 ms. Used by `storm` and `chaos` with the server's pid.
final class ServerSampler: Sendable {
    struct Summary: Sendable {
        var peak = 0
        var peakAt: Int64 = 0
        var threadsPeak = 0
        var descriptorsPeak = 0
        var samples = 0
        var exited = false
    }

    let pid: Int32
    let countsDescriptors: Bool
    private let stopFlag = Atomic<Bool>(false)
    private let state = Lock<Summary>(Summary())
    private let handle = Lock<ThreadHandle?>(nil)

    init(pid: Int32, countsDescriptors: Bool = false) {
        self.pid = pid
        self.countsDescriptors = countsDescriptors
    }

    static func status(pid: Int32) -> (rss: Int, threads: Int)? {
        guard let bytes = try? System.readFile("/proc/\(pid)/status") else { return nil }
        return ProcFacts.status(String(decoding: bytes, as: UTF8.self))
    }

    static func cpuSeconds(pid: Int32) -> Double {
        guard let bytes = try? System.readFile("/proc/\(pid)/stat") else { return 0 }
        return Double(ProcFacts.cpuTicks(String(decoding: bytes, as: UTF8.self))) / Double(System.clockTicksPerSecond)
    }

    /// The process's open descriptor numbers, ascending; nil once it has gone
    /// (or /proc/PID/fd is not ours to read).
    static func descriptors(pid: Int32) -> [Int]? {
        guard let names = try? System.directoryEntries("/proc/\(pid)/fd") else { return nil }
        return names.compactMap { Int($0) }.sorted()
    }

    static func descriptorCount(pid: Int32) -> Int? {
        (try? System.directoryEntries("/proc/\(pid)/fd"))?.count
    }

    /// The peak so far, without stopping.
    var summary: Summary { state.withLock { $0 } }

    func start() {
        let spawned = try? Threads.spawn(name: "server-sampler") { [self] in
            var next = Clock.monotonicNanoseconds()
            var round = 0
            while !stopFlag.load(ordering: .relaxed) {
                let now = Clock.monotonicNanoseconds()
                let sample = Self.status(pid: pid)
                let descriptors = countsDescriptors && round % 5 == 0 ? Self.descriptorCount(pid: pid) : nil
                round += 1
                state.withLock { summary in
                    guard let sample else {
                        summary.exited = true
                        return
                    }
                    summary.samples += 1
                    if sample.rss > summary.peak {
                        summary.peak = sample.rss
                        summary.peakAt = now
                    }
                    summary.threadsPeak = max(summary.threadsPeak, sample.threads)
                    if let descriptors { summary.descriptorsPeak = max(summary.descriptorsPeak, descriptors) }
                }
                next += 20_000_000
                if next < Clock.monotonicNanoseconds() { next = Clock.monotonicNanoseconds() + 20_000_000 }
                Clock.sleep(untilMonotonicNanoseconds: next)
            }
        }
        handle.withLock { $0 = spawned }
    }

    func stop() -> Summary {
        stopFlag.store(true, ordering: .relaxed)
        if let thread = handle.withLock({ $0 }) { thread.join() }
        return state.withLock { $0 }
    }
}
