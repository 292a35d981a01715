import EchoChatCore
import EchoChatOptions
import EchoChatPOSIX

/// `--metrics HOST:PORT`: a minimal HTTP/1.1 server for Prometheus, with
/// one answer, `GET /metrics` (the exposition of `PrometheusText`).
///
/// - Thread: one of its own, which alone owns the listener and every
///   metrics connection; it is started after the server and stopped (woken
///   through an eventfd, joined) after the server has stopped.
/// - It never disturbs the chat or echo clients: it reads counters (relaxed
///   atomics) and, in chat mode, takes the hub lock once per scrape, for an
///   O(1) read of the client and room counts.
/// - Blocking: only in poll(2), over the stop eventfd, the listener and at
///   most `maxConnections` connections, every one non-blocking and with a
///   deadline: the request head must arrive within `requestTimeout` (else
///   408), the response must be taken within `responseTimeout`, and a closed
///   connection lingers `lingerTime` at most. Beyond `maxConnections`,
///   clients wait in the listen backlog.
/// - One request per connection, answered with `Connection: close`: a bad
///   request gets 400 (or 431, 505), a path other than `/metrics` 404, a
///   method other than GET and HEAD 405.
public final class MetricsServer: Sendable {
    public static let maxConnections = 16
    /// Descriptors it may hold: the listener, the eventfd, its connections.
    public static let descriptors = maxConnections + 2
    static let requestTimeout: Int64 = 5_000_000_000
    static let responseTimeout: Int64 = 5_000_000_000
    static let lingerTime: Int64 = 1_000_000_000

    private let listener: Socket
    private let stop: Wakeup
    private let logger: Logger
    private let thread = Lock<ThreadHandle?>(nil)
    /// The address really bound (with `--metrics HOST:0`, the port chosen).
    public let address: SocketAddress

    /// Binds `endpoint` (failing as `Socket.listen` does: EADDRINUSE, …).
    public init(endpoint: Endpoint, logger: Logger) throws(SystemError) {
        listener = try Socket.listen(host: endpoint.host, port: endpoint.port, backlog: 64)
        do {
            stop = try Wakeup()
            address = try listener.localAddress()
        } catch {
            listener.close()
            throw error
        }
        self.logger = logger
    }

    /// Serves on its own thread until `shutDown()`; `pairs` gives the
    /// counters at the moment of each scrape (any thread may call it).
    public func start(pairs: @escaping @Sendable () -> [TransportStats.Pair]) throws(SystemError) {
        let handle = try Threads.spawn(name: "echochat-metrics") { [self] in
            serve(metrics: { PrometheusText.render(pairs(), version: Release.version) })
        }
        thread.withLock { $0 = handle }
    }

    /// Stops the thread (joined: nothing is left running) and closes every
    /// descriptor it held. Also closes the listener when `start` was never called.
    public func shutDown() {
        stop.ring()
        if let handle = thread.withLock({ handle in defer { handle = nil }; return handle }) {
            handle.join()
        } else {
            listener.close()
        }
        stop.close()
    }

    /// The answer to one request head.
    static func answer(_ head: HTTP.Head, metrics: () -> String) -> [UInt8] {
        guard head.method == "GET" || head.method == "HEAD" else {
            return HTTP.errorResponse(.methodNotAllowed, fields: [HTTP.Field("Allow", "GET, HEAD")])
        }
        guard head.path == "/metrics" else { return HTTP.errorResponse(.notFound) }
        return HTTP.response(.ok, contentType: PrometheusText.contentType, body: metrics(), headOnly: head.method == "HEAD")
    }

    /// One metrics connection, owned by the metrics thread.
    private struct Client {
        enum Phase {
            case reading
            case writing
            /// Answered and shut for writing: what the client still sends is
            /// read and dropped until it closes, so closing with unread bytes
            /// cannot reset the connection before it has read the answer.
            case lingering
        }
        let socket: Socket
        var phase = Phase.reading
        var reader = HTTP.RequestReader()
        var response: [UInt8] = []
        var written = 0
        var deadline: Int64
    }

    private func serve(metrics: () -> String) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 16)
        defer { buffer.deallocate() }
        var clients: [Client] = []
        var pausedUntil: Int64?
        loop: while true {
            var now = Clock.monotonicNanoseconds()
            if let until = pausedUntil, now >= until { pausedUntil = nil }
            let listening = pausedUntil == nil && clients.count < Self.maxConnections
            var interests = [Poll.Interest(stop.descriptor)]
            if listening { interests.append(Poll.Interest(listener.descriptor)) }
            for client in clients {
                interests.append(Poll.Interest(client.socket.descriptor, readable: client.phase != .writing, writable: client.phase == .writing))
            }
            let wake = clients.map(\.deadline).min().map { min($0, pausedUntil ?? .max) } ?? pausedUntil
            let timeout = wake.map { Int32(clamping: max(0, ($0 - now) / 1_000_000 + 1)) } ?? -1
            let ready: [Poll.Readiness]
            do {
                ready = try Poll.wait(interests, timeoutMilliseconds: timeout)
            } catch {
                logger.error("metrics: \(error); the metrics endpoint stops")
                break loop
            }
            now = Clock.monotonicNanoseconds()
            if ready.first?.readable == true { break loop }
            let offset = listening ? 2 : 1
            for index in clients.indices.reversed() {
                let readiness = ready.isEmpty ? Poll.Readiness() : ready[offset + index]
                if !advance(&clients[index], readiness, now: now, buffer: buffer, metrics: metrics) {
                    clients[index].socket.close()
                    clients.remove(at: index)
                }
            }
            if listening && ready.count > 1 && (ready[1].readable || ready[1].failed) {
                while clients.count < Self.maxConnections {
                    do {
                        guard case .done(let socket) = try listener.accept(nonBlocking: true) else { break }
                        clients.append(Client(socket: socket, deadline: now + Self.requestTimeout))
                    } catch {
                        // Out of descriptors (or another failure): wait a little
                        // rather than spin on a listener that stays readable.
                        if error.errno != .connectionAborted {
                            logger.warn("metrics: accept failed: \(error); pausing for 100 ms", limitedAs: "metrics-accept")
                            pausedUntil = now + 100_000_000
                        }
                        break
                    }
                }
            }
        }
        for client in clients { client.socket.close() }
        listener.close()
    }

    /// Moves one connection on; false when it is done and must be closed.
    private func advance(
        _ client: inout Client, _ readiness: Poll.Readiness, now: Int64, buffer: UnsafeMutableRawBufferPointer,
        metrics: () -> String
    ) -> Bool {
        switch client.phase {
        case .reading:
            if readiness.readable || readiness.failed {
                switch try? client.socket.read(into: buffer) {
                case .bytes(let count)?:
                    switch client.reader.read(UnsafeRawBufferPointer(rebasing: buffer[0..<count])) {
                    case .needMore: break
                    case .head(let head): respond(&client, MetricsServer.answer(head, metrics: metrics), now: now)
                    case .failed(let status):
                        logger.info("metrics: \(status) for a request from \(peer(client))", limitedAs: "metrics-bad-request")
                        respond(&client, HTTP.errorResponse(status), now: now)
                    }
                case .wouldBlock?: break
                case .endOfFile?, nil: return false
                }
            }
            if client.phase == .reading && now >= client.deadline {
                respond(&client, HTTP.errorResponse(.requestTimeout), now: now)
            }
            if client.phase == .writing { return write(&client, now: now) }
            return true
        case .writing:
            if readiness.writable || readiness.failed { return write(&client, now: now) }
            return now < client.deadline
        case .lingering:
            if readiness.readable || readiness.failed {
                switch try? client.socket.read(into: buffer) {
                case .bytes?, .wouldBlock?: break
                case .endOfFile?, nil: return false
                }
            }
            return now < client.deadline
        }
    }

    private func respond(_ client: inout Client, _ response: [UInt8], now: Int64) {
        client.response = response
        client.phase = .writing
        client.deadline = now + Self.responseTimeout
    }

    /// Writes what the kernel takes; once all is written, shuts the sending
    /// side and lingers. False when the connection failed.
    private func write(_ client: inout Client, now: Int64) -> Bool {
        while client.written < client.response.count {
            let result = client.response.withUnsafeBytes { bytes in
                try? client.socket.write(UnsafeRawBufferPointer(rebasing: bytes[client.written...]))
            }
            switch result {
            case .done(let count)?: client.written += count
            case .wouldBlock?: return now < client.deadline
            case nil: return false
            }
        }
        client.socket.shutdownWrite()
        client.phase = .lingering
        client.deadline = now + Self.lingerTime
        return true
    }

    private func peer(_ client: Client) -> String {
        (try? client.socket.peerAddress())?.description ?? "\(client.socket)"
    }
}
