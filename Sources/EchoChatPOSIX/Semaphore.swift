import Glibc

/// A counting semaphore (sem_init(3)) for handing work to blocked threads.
public final class Semaphore: @unchecked Sendable {
    // sem_t is designed for concurrent use; it lives at a fixed address.
    private let semaphore: UnsafeMutablePointer<sem_t>

    public init(value: UInt32 = 0) {
        semaphore = .allocate(capacity: 1)
        sem_init(semaphore, 0, value)
    }

    deinit {
        sem_destroy(semaphore)
        semaphore.deallocate()
    }

    public func signal() { sem_post(semaphore) }

    /// Waits for a signal (retrying EINTR).
    public func wait() {
        while sem_wait(semaphore) != 0 && Errno.current == .interrupted {}
    }
}
