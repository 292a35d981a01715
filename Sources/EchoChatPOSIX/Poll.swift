import CEchoChatShim
import Glibc

/// poll(2) for the few descriptors a thread that does not run an epoll loop
/// waits on: a client's socket and terminal, a pipe, a socket being connected.
/// `poll(_:timeoutMilliseconds:unblocking:)` is the only call to poll(2) and
/// ppoll(2); everything else here (and `Socket.wait`) is built on it.
public enum Poll {
    /// What to wait for on one descriptor.
    public struct Interest: Sendable, Equatable {
        public var descriptor: Int32
        public var readable: Bool
        public var writable: Bool

        public init(_ descriptor: Int32, readable: Bool = true, writable: Bool = false) {
            self.descriptor = descriptor
            self.readable = readable
            self.writable = writable
        }
    }

    /// What poll(2) reported for one descriptor.
    public struct Readiness: Sendable, Equatable {
        public var readable = false
        public var writable = false
        /// POLLERR, POLLHUP or POLLNVAL: the next read or write reports how
        /// (end of file, an error), so callers read or write to find out.
        public var failed = false

        public init(readable: Bool = false, writable: Bool = false, failed: Bool = false) {
            self.readable = readable
            self.writable = writable
            self.failed = failed
        }

        init(_ entry: pollfd) {
            let events = Int32(entry.revents)
            self.init(
                readable: events & Int32(POLLIN) != 0, writable: events & Int32(POLLOUT) != 0,
                failed: events & Int32(POLLERR | POLLHUP | POLLNVAL) != 0)
        }
    }

    /// poll(2) for reading and/or writing on several descriptors; one
    /// `Readiness` per interest, in order. An empty result means the timeout
    /// passed or a signal interrupted the wait (`timeoutMilliseconds` -1
    /// waits without limit).
    public static func wait(_ interests: [Interest], timeoutMilliseconds: Int32) throws(SystemError) -> [Readiness] {
        var entries = interests.map { interest in
            pollfd(
                fd: interest.descriptor,
                events: Int16((interest.readable ? POLLIN : 0) | (interest.writable ? POLLOUT : 0)), revents: 0)
        }
        guard let ready = try poll(&entries, timeoutMilliseconds: timeoutMilliseconds), ready > 0 else { return [] }
        return entries.map(Readiness.init)
    }

    /// poll(2) for readability on several descriptors; returns, per
    /// descriptor, whether it is readable or failed (POLLIN/ERR/HUP).
    /// An empty result means the timeout passed or a signal interrupted.
    public static func readable(_ descriptors: [Int32], timeoutMilliseconds: Int32) throws(SystemError) -> [Bool] {
        try wait(descriptors.map { Interest($0) }, timeoutMilliseconds: timeoutMilliseconds).map { $0.readable || $0.failed }
    }

    /// Waits until `descriptor` is writable or failed, or `timeoutMilliseconds`
    /// pass (-1: no limit); a signal restarts the wait with the whole timeout.
    /// False when the time ran out.
    static func waitUntilWritable(_ descriptor: Int32, timeoutMilliseconds: Int32) throws(SystemError) -> Bool {
        var entries = [pollfd(fd: descriptor, events: Int16(POLLOUT), revents: 0)]
        while true {
            if let ready = try poll(&entries, timeoutMilliseconds: timeoutMilliseconds) { return ready > 0 }
        }
    }

    /// The one call to poll(2), or, with `signal`, to ppoll(2) with that
    /// signal unblocked for the wait only (see `WakeableThread`). Fills each
    /// entry's `revents` and returns how many are ready (0: the time ran out),
    /// or nil when a signal interrupted the wait.
    static func poll(
        _ entries: inout [pollfd], timeoutMilliseconds: Int32, unblocking signal: Int32? = nil
    ) throws(SystemError) -> Int? {
        try entries.withUnsafeMutableBufferPointer { (buffer) throws(SystemError) -> Int? in
            try poll(buffer, timeoutMilliseconds: timeoutMilliseconds, unblocking: signal)
        }
    }

    static func poll(
        _ buffer: UnsafeMutableBufferPointer<pollfd>, timeoutMilliseconds: Int32, unblocking signal: Int32? = nil
    ) throws(SystemError) -> Int? {
        let status =
            if let signal {
                cechochat_ppoll_unblocking(buffer.baseAddress, nfds_t(buffer.count), timeoutMilliseconds, signal)
            } else {
                Glibc.poll(buffer.baseAddress, nfds_t(buffer.count), timeoutMilliseconds)
            }
        if status >= 0 { return Int(status) }
        let errno = Errno.current
        if errno == .interrupted { return nil }
        let operation = signal == nil ? "poll" : "ppoll"
        assertNotProgrammingError(errno, operation)
        throw SystemError(operation, errno)
    }
}
