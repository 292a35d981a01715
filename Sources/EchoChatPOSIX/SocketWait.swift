import Glibc

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
        // On the stack: the thread strategy waits here once per message.
        try withUnsafeTemporaryAllocation(of: pollfd.self, capacity: 2) { (entries) throws(SystemError) -> WaitResult in
            entries[0] = pollfd(fd: descriptor, events: Int16((readable ? POLLIN : 0) | (writable ? POLLOUT : 0)), revents: 0)
            entries[1] = pollfd(fd: stop ?? -1, events: Int16(POLLIN), revents: 0)
            let used = UnsafeMutableBufferPointer(rebasing: entries[0..<(stop == nil ? 1 : 2)])
            var result = WaitResult()
            guard try Poll.poll(used, timeoutMilliseconds: timeoutMilliseconds, unblocking: WakeableThread.signal) != nil else {
                result.interrupted = true
                return result
            }
            let socket = Poll.Readiness(entries[0])
            result.readable = socket.readable
            result.writable = socket.writable
            result.failed = socket.failed
            result.stopped = stop != nil && entries[1].revents != 0
            return result
        }
    }
}
