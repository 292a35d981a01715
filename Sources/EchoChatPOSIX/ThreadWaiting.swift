import CEchoChatShim
import Glibc

/// A thread that can be woken from `Socket.wait(...)` by another thread with
/// a signal (SIGUSR2), without a descriptor of its own: the signal is blocked
/// everywhere except inside ppoll(2), so it is never lost between a thread's
/// last look at its state and its wait (the classic pselect/ppoll pattern).
public struct WakeableThread: Sendable, Hashable {
    let thread: pthread_t

    /// The calling thread.
    public static var current: WakeableThread { WakeableThread(thread: pthread_self()) }

    /// Call once per process, before creating threads: installs a do-nothing
    /// SIGUSR2 handler and blocks SIGUSR2 in the caller (inherited by threads).
    public static func prepareProcess() {
        _ = cechochat_install_wakeup_handler(SIGUSR2)
        Signals.block([.user2])
    }

    /// Interrupts this thread's current or next `Socket.wait`.
    public func wake() {
        _ = pthread_kill(thread, SIGUSR2)
    }
}

/// What `Socket.wait` saw.
public struct WaitResult: Sendable {
    public var readable = false
    public var writable = false
    /// POLLERR/POLLHUP/POLLNVAL on the socket: reading or writing will report it.
    public var failed = false
    /// The shared stop descriptor is readable.
    public var stopped = false
    /// Woken by `WakeableThread.wake()`.
    public var interrupted = false
    public var timedOut: Bool { !readable && !writable && !failed && !stopped && !interrupted }
}

extension Socket {
    /// Waits until this socket is readable and/or writable (as asked), `stop`
    /// is readable, `timeoutMilliseconds` pass (-1: no limit) or the thread is
    /// woken. ppoll(2) with SIGUSR2 unblocked for the wait only.
    public func wait(
        readable: Bool, writable: Bool, stop: Int32?, timeoutMilliseconds: Int32
    ) throws(SystemError) -> WaitResult {
        var entries = [pollfd](repeating: pollfd(), count: 2)
        entries[0] = pollfd(
            fd: descriptor, events: Int16((readable ? POLLIN : 0) | (writable ? POLLOUT : 0)), revents: 0)
        var count: nfds_t = 1
        if let stop {
            entries[1] = pollfd(fd: stop, events: Int16(POLLIN), revents: 0)
            count = 2
        }
        let status = cechochat_ppoll_unblocking(&entries, count, timeoutMilliseconds, SIGUSR2)
        var result = WaitResult()
        if status < 0 {
            let errno = Errno.current
            guard errno == .interrupted else { throw SystemError("ppoll", errno) }
            result.interrupted = true
            return result
        }
        let events = Int32(entries[0].revents)
        result.readable = events & Int32(POLLIN) != 0
        result.writable = events & Int32(POLLOUT) != 0
        result.failed = events & Int32(POLLERR | POLLHUP | POLLNVAL) != 0
        result.stopped = count == 2 && entries[1].revents != 0
        return result
    }
}

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

public enum Poll {
    /// poll(2) for readability on several descriptors; returns, per
    /// descriptor, whether it is readable or failed (POLLIN/ERR/HUP).
    /// An empty result means the timeout passed or a signal interrupted.
    public static func readable(_ descriptors: [Int32], timeoutMilliseconds: Int32) throws(SystemError) -> [Bool] {
        var entries = descriptors.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        let status = Glibc.poll(&entries, nfds_t(entries.count), timeoutMilliseconds)
        if status < 0 {
            let errno = Errno.current
            if errno == .interrupted { return [] }
            throw SystemError("poll", errno)
        }
        if status == 0 { return [] }
        return entries.map { $0.revents != 0 }
    }
}
