import CEchoChatShim
import Glibc

/// An eventfd(2) used as a doorbell: any thread rings it, the poller that
/// registered it wakes up. Non-blocking; ringing never blocks.
public struct Wakeup: Sendable {
    public let descriptor: Int32

    /// `counting`: each `ring()` adds a count that one `take()` removes
    /// (EFD_SEMAPHORE), so several threads polling it share the rings out.
    public init(counting: Bool = false) throws(SystemError) {
        descriptor = try syscallNoWait("eventfd") { counting ? cechochat_eventfd_semaphore() : cechochat_eventfd() }
    }

    /// Adds one to the counter; safe from any thread, and from a signal-watcher thread.
    public func ring() {
        var one: UInt64 = 1
        if Glibc.write(descriptor, &one, 8) < 0 { assertNotProgrammingError(.current, "ring eventfd \(descriptor)") }
    }

    /// Resets the counter, so level-triggered polling stops reporting it.
    public func drain() {
        var value: UInt64 = 0
        // EAGAIN (nothing to drain) is fine; EBADF is a use after close.
        if Glibc.read(descriptor, &value, 8) < 0 { assertNotProgrammingError(.current, "drain eventfd \(descriptor)") }
    }

    /// A counting doorbell: takes one ring; false if another thread took
    /// the last one first (or there was none).
    public func take() -> Bool {
        var value: UInt64 = 0
        if Glibc.read(descriptor, &value, 8) == 8 { return true }
        assertNotProgrammingError(.current, "take from eventfd \(descriptor)")
        return false
    }

    public func close() { closeDescriptor(descriptor) }
}
