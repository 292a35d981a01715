import Glibc

/// What `Socket.wait` saw.
public struct WaitResult: Sendable {
    public var readable = false
    public var writable = false
    /// POLLERR/POLLHUP/POLLNVAL on the socket: reading or writing will report it.
    public var failed = false
    /// Woken by `WakeableThread.wake()`.
    public var interrupted = false
    public var timedOut: Bool { !readable && !writable && !failed && !interrupted }
}

extension Socket {
    /// Waits until this socket is readable and/or writable (as asked),
    /// `timeoutMilliseconds` pass (-1: no limit) or the thread is woken.
    /// ppoll(2) with SIGUSR2 unblocked for the wait only.
    public func wait(readable: Bool, writable: Bool, timeoutMilliseconds: Int32) throws(SystemError) -> WaitResult {
        var entry = pollfd(fd: descriptor, events: Int16((readable ? POLLIN : 0) | (writable ? POLLOUT : 0)), revents: 0)
        var result = WaitResult()
        // One entry on the stack: the thread strategy waits here once per message.
        let status = try withUnsafeMutablePointer(to: &entry) { (pointer) throws(SystemError) -> Int? in
            try Poll.poll(
                UnsafeMutableBufferPointer(start: pointer, count: 1), timeoutMilliseconds: timeoutMilliseconds,
                unblocking: WakeableThread.signal)
        }
        guard status != nil else {
            result.interrupted = true
            return result
        }
        let socket = Poll.Readiness(entry)
        result.readable = socket.readable
        result.writable = socket.writable
        result.failed = socket.failed
        return result
    }
}
