import EchoChatCore
import EchoChatPOSIX

/// Why a Redis connection is no good any more: it is closed and the link
/// starts again (with backoff).
struct RedisFailure: Error, Equatable, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// One connection to Redis: non-blocking, pipelined, used by one thread at
/// a time (the one servicing the cluster link), which watches `events` and
/// calls `handle`.
///
/// Commands are written in the order they are sent and Redis answers them
/// in that order, so each reply goes to the oldest waiting handler. A
/// connection in subscriber mode (`SUBSCRIBE`) also gets values that answer
/// nothing (published messages): those go to `onPush`. Nothing here blocks:
/// the connect, the writes and the reads all wait in the owner's poll, and
/// `overdue(now:timeout:)` tells the owner when Redis has stalled.
final class RedisConnection {
    typealias ReplyHandler = (RESPValue) -> Void

    let socket: Socket
    /// The TCP handshake has completed.
    private(set) var connected: Bool
    private var decoder = RESPDecoder()
    private var output: [UInt8] = []
    private var written = 0
    /// Handlers of the commands sent and not yet answered, oldest first
    /// from `head`, with the time each was sent.
    private var waiting: [(sent: Int64, handler: ReplyHandler)] = []
    private var head = 0
    private var values: [RESPValue] = []
    /// Values that answer no command (subscriber mode's messages).
    var onPush: (RESPValue) -> Void = { _ in }
    /// In subscriber mode replies to SUBSCRIBE come as pushes: nothing waits for them.
    var subscriber = false

    /// Starts connecting to `address` (Redis at `url`); the handshake
    /// completes in the owner's poll.
    init(address: SocketAddress, url: RedisURL) throws(RedisFailure) {
        do {
            let (socket, status) = try Socket.startConnect(to: address)
            self.socket = socket
            if case .done = status { connected = true } else { connected = false }
        } catch {
            throw RedisFailure("cannot connect to \(url): \(error.errno)")
        }
    }

    /// Queues a command; `reply` gets its answer (an `.error` value for a
    /// command Redis refused). Sent when the socket can take it.
    func send(_ arguments: [[UInt8]], now: Int64, reply: @escaping ReplyHandler = { _ in }) {
        RESP.appendCommand(arguments, to: &output)
        if !subscriber { waiting.append((now, reply)) }
    }

    func send(_ arguments: [String], now: Int64, reply: @escaping ReplyHandler = { _ in }) {
        send(arguments.map { Array($0.utf8) }, now: now, reply: reply)
    }

    /// Commands sent and not yet answered.
    var unanswered: Int { waiting.count - head }

    /// When the oldest unanswered command was sent (nil: none waits).
    var oldestSent: Int64? { head < waiting.count ? waiting[head].sent : nil }

    /// What to wait for (epoll).
    var events: Poller.Events {
        var events: Poller.Events = connected ? .readable : []
        if !connected || written < output.count { events.insert(.writable) }
        return events
    }

    /// Whether the oldest unanswered command has waited longer than `timeout`.
    func overdue(now: Int64, timeout: Int64) -> Bool {
        head < waiting.count && now - waiting[head].sent > timeout
    }

    /// Does what `readiness` allows: finishes the connect, writes what is
    /// queued, reads and dispatches replies. Throws when the connection is
    /// lost or Redis spoke something that is not RESP2.
    func handle(_ readiness: Poll.Readiness, buffer: UnsafeMutableRawBufferPointer) throws(RedisFailure) {
        if !connected {
            guard readiness.writable || readiness.failed else { return }
            if let error = socket.connectionError() { throw RedisFailure("cannot connect: \(error)") }
            connected = true
        }
        if readiness.readable || readiness.failed { try read(buffer) }
        try flush()
    }

    /// Writes what the socket takes now.
    func flush() throws(RedisFailure) {
        guard connected else { return }
        while written < output.count {
            let (socket, from) = (socket, written)
            let result: Result<IOResult<Int>, SystemError> = output.withUnsafeBytes { bytes in
                Result { () throws(SystemError) in try socket.write(UnsafeRawBufferPointer(rebasing: bytes[from...])) }
            }
            let count: Int
            switch result {
            case .failure(let error): throw RedisFailure("write: \(error.errno)")
            case .success(.wouldBlock): return
            case .success(.done(let taken)): count = taken
            }
            written += count
        }
        output.removeAll(keepingCapacity: output.capacity <= 64 * 1024)
        written = 0
    }

    private func read(_ buffer: UnsafeMutableRawBufferPointer) throws(RedisFailure) {
        while true {
            let result: ReadResult
            do {
                result = try socket.read(into: buffer)
            } catch {
                throw RedisFailure("read: \(error.errno)")
            }
            switch result {
            case .wouldBlock: return
            case .endOfFile: throw RedisFailure("Redis closed the connection")
            case .bytes(let count):
                do {
                    try decoder.decode(UnsafeRawBufferPointer(rebasing: buffer[..<count]), into: &values)
                } catch {
                    throw RedisFailure("Redis sent \(error)")
                }
                try dispatch()
                if count < buffer.count { return }
            }
        }
    }

    private func dispatch() throws(RedisFailure) {
        for value in values {
            if head < waiting.count {
                let handler = waiting[head].handler
                head += 1
                handler(value)
            } else if subscriber {
                onPush(value)
            } else {
                throw RedisFailure("Redis sent a reply nothing asked for: \(value)")
            }
        }
        values.removeAll(keepingCapacity: true)
        if head == waiting.count {
            waiting.removeAll(keepingCapacity: true)
            head = 0
        }
    }

    /// Closes the socket and lets go of every handler: they capture the
    /// link's session, which holds this connection (a cycle that would
    /// otherwise outlive the session).
    func close() {
        socket.close()
        waiting = []
        head = 0
        values = []
        onPush = { _ in }
    }
}
