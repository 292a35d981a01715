import CEchoChatShim
import Glibc

/// A thread that can be woken from `Socket.wait(...)` by another thread with
/// a signal (SIGUSR2), without a descriptor of its own: the signal is blocked
/// everywhere except inside ppoll(2), so it is never lost between a thread's
/// last look at its state and its wait (the classic pselect/ppoll pattern).
public struct WakeableThread: Sendable, Hashable {
    let thread: pthread_t

    /// The signal that wakes a thread; unblocked only inside `Socket.wait`.
    static let signal = SIGUSR2

    /// The calling thread.
    public static var current: WakeableThread { WakeableThread(thread: pthread_self()) }

    /// Call once per process, before creating threads: installs a do-nothing
    /// SIGUSR2 handler and blocks SIGUSR2 in the caller (inherited by threads).
    public static func prepareProcess() {
        _ = cechochat_install_wakeup_handler(signal)
        Signals.block([Signal(rawValue: signal)])
    }

    /// Interrupts this thread's current or next `Socket.wait`.
    public func wake() {
        _ = pthread_kill(thread, Self.signal)
    }
}
