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
/// A struct holding one reference: copies share the value and the mutex.
/// Both live in one allocation (the mutex in the object's tail, where its
/// address is stable): every connection holds one of these, and a class
/// with a mutex allocated apart cost each two blocks of the allocator.
///
/// @unchecked Sendable: the value is reachable only inside `withLock`, while
/// the mutex is held (the same contract as `Mutex`).
public struct Lock<Value>: @unchecked Sendable {
    private let storage: Storage

    private final class Storage: ManagedBuffer<Value, pthread_mutex_t> {
        // ManagedBuffer destroys the header (the value); the element is ours.
        deinit {
            withUnsafeMutablePointerToElements { mutex in
                pthread_mutex_destroy(mutex)
                mutex.deinitialize(count: 1)
            }
        }
    }

    public init(_ value: Value) {
        let buffer = Storage.create(minimumCapacity: 1) { _ in value }
        buffer.withUnsafeMutablePointerToElements { mutex in
            mutex.initialize(to: pthread_mutex_t())
            var attributes = pthread_mutexattr_t()
            pthread_mutexattr_init(&attributes)
            pthread_mutexattr_settype(&attributes, Int32(PTHREAD_MUTEX_NORMAL))
            pthread_mutex_init(mutex, &attributes)
            pthread_mutexattr_destroy(&attributes)
        }
        // `create` returns the ManagedBuffer type; the object is a Storage.
        storage = unsafeDowncast(buffer, to: Storage.self)
    }

    /// The mutex is what makes access to the value exclusive (no Swift
    /// exclusivity check is involved: the value is reached by pointer).
    @inline(__always)
    public func withLock<Result, Failure: Error>(
        _ body: (inout Value) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        try storage.withUnsafeMutablePointers { (value, mutex) throws(Failure) -> Result in
            pthread_mutex_lock(mutex)
            defer { pthread_mutex_unlock(mutex) }
            return try body(&value.pointee)
        }
    }

    /// `withLock` if the mutex is free now (pthread_mutex_trylock); nil,
    /// without waiting, if another thread holds it.
    @inline(__always)
    public func withLockIfAvailable<Result>(_ body: (inout Value) -> Result) -> Result? {
        storage.withUnsafeMutablePointers { (value, mutex) -> Result? in
            guard pthread_mutex_trylock(mutex) == 0 else { return nil }
            defer { pthread_mutex_unlock(mutex) }
            return body(&value.pointee)
        }
    }
}
