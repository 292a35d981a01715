import Glibc

/// A value behind a pthread mutex: `lock.withLock { $0.field += 1 }`.
///
/// Why not `Synchronization.Mutex`: on Linux it parks threads on futexes
/// inside the prebuilt Synchronization library, which ThreadSanitizer does not
/// instrument, so TSan sees no ordering between critical sections and reports
/// every access the Mutex protects as a race (checked here with a two-thread
/// counter: correct totals, four "Swift access race" reports). TSan intercepts
/// pthread_mutex_lock/unlock, so with this lock its reports mean real races.
///
/// @unchecked Sendable: the value is reachable only inside `withLock`, while
/// the mutex is held (the same contract as `Mutex`).
public final class Lock<Value>: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    #if DEBUG
        private var value: Value
    #else
        // The mutex is what makes access exclusive; release builds skip
        // Swift's dynamic check of the same (debug builds, and so the tests,
        // keep it). It was about a tenth of epoll's instructions per message.
        @exclusivity(unchecked) private var value: Value
    #endif

    public init(_ value: Value) {
        self.value = value
        mutex = .allocate(capacity: 1)
        var attributes = pthread_mutexattr_t()
        pthread_mutexattr_init(&attributes)
        pthread_mutexattr_settype(&attributes, Int32(PTHREAD_MUTEX_NORMAL))
        pthread_mutex_init(mutex, &attributes)
        pthread_mutexattr_destroy(&attributes)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    @inline(__always)
    public func withLock<Result, Failure: Error>(
        _ body: (inout Value) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
