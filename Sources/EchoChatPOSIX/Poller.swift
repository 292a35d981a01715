import CEchoChatShim
import Glibc

/// An epoll(7) instance. The four verbs of Redis's `ae.c`: register, modify,
/// unregister, wait. epoll_ctl(2) is safe to call from any thread, so the
/// poller itself is Sendable; the event buffer that `wait` fills is a separate,
/// single-owner `PollEvents` value.
public struct Poller: Sendable {
    public struct Events: OptionSet, Sendable, Hashable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }

        public static let readable = Events(rawValue: CECHOCHAT_EPOLLIN)
        public static let writable = Events(rawValue: CECHOCHAT_EPOLLOUT)
        /// Reported whether asked for or not.
        public static let error = Events(rawValue: CECHOCHAT_EPOLLERR)
        /// Reported whether asked for or not.
        public static let hangup = Events(rawValue: CECHOCHAT_EPOLLHUP)
        /// Deliver one event, then disarm until `modify` re-arms (for thread pools).
        public static let oneShot = Events(rawValue: CECHOCHAT_EPOLLONESHOT)
    }

    public let descriptor: Int32

    public init() throws(SystemError) {
        descriptor = try syscallNoWait("epoll_create1") { cechochat_epoll_create() }
    }

    /// EPOLL_CTL_ADD. `data` comes back with every event for `fd`.
    public func register(_ fd: Int32, for events: Events, data: UInt64) throws(SystemError) {
        try control(CECHOCHAT_EPOLL_CTL_ADD, fd, events, data, "epoll_ctl ADD")
    }

    /// EPOLL_CTL_MOD: change the interest set (and re-arm a one-shot registration).
    public func modify(_ fd: Int32, for events: Events, data: UInt64) throws(SystemError) {
        try control(CECHOCHAT_EPOLL_CTL_MOD, fd, events, data, "epoll_ctl MOD")
    }

    /// EPOLL_CTL_DEL. Closing a descriptor that was never dup'ed removes it too.
    public func unregister(_ fd: Int32) throws(SystemError) {
        try control(CECHOCHAT_EPOLL_CTL_DEL, fd, [], 0, "epoll_ctl DEL")
    }

    /// epoll_wait(2): fills `events`, returns how many are ready (0 on timeout).
    /// `timeoutMilliseconds` -1 waits forever.
    public func wait(into events: inout PollEvents, timeoutMilliseconds: Int32) throws(SystemError) -> Int {
        let fd = descriptor
        let buffer = events.buffer
        let capacity = events.capacity
        let count = try syscallNoWait("epoll_wait") {
            cechochat_epoll_wait(fd, buffer, capacity, timeoutMilliseconds)
        }
        events.count = Int(count)
        return Int(count)
    }

    public func close() { closeDescriptor(descriptor) }

    private func control(_ op: Int32, _ fd: Int32, _ events: Events, _ data: UInt64, _ name: StaticString) throws(SystemError) {
        let epfd = descriptor
        _ = try syscallNoWait("\(name) fd \(fd)") { cechochat_epoll_ctl(epfd, op, fd, events.rawValue, data) }
    }
}

/// The buffer epoll_wait(2) fills; owned by the thread that waits.
public struct PollEvents: ~Copyable {
    fileprivate let buffer: UnsafeMutablePointer<epoll_event>
    fileprivate let capacity: Int32
    public fileprivate(set) var count = 0

    public init(capacity: Int) {
        self.capacity = Int32(capacity)
        buffer = cechochat_epoll_events_allocate(Int32(capacity))
    }

    deinit { cechochat_epoll_events_free(buffer) }

    @inline(__always)
    public func events(at index: Int) -> Poller.Events {
        Poller.Events(rawValue: cechochat_epoll_events_at(buffer, Int32(index)))
    }

    @inline(__always)
    public func data(at index: Int) -> UInt64 {
        cechochat_epoll_data_at(buffer, Int32(index))
    }
}
