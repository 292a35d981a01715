import EchoChatCore
import EchoChatPOSIX

/// A real `redis-server` of the test's own: on a free loopback port, with
/// no persistence, killed with the test (`TestProcess`). It can be killed
/// and started again on the same port, as an outage.
public final class RedisProcess: Sendable {
    public let port: Int
    private let process: Lock<TestProcess?>

    /// `redis://127.0.0.1:PORT`.
    public var url: String { "redis://127.0.0.1:\(port)" }

    public init() throws {
        // Redis cannot report a port it picked itself: take a free one from
        // the kernel and hand it over (tried again if another took it meanwhile).
        var lastError: any Error = TestFailure("redis-server did not start")
        for _ in 0..<5 {
            let probe = try Socket.listen(host: "127.0.0.1", port: 0)
            let port = try probe.localAddress().port
            probe.close()
            do {
                process = Lock(try Self.start(port: port))
                self.port = port
                return
            } catch {
                lastError = error
            }
        }
        throw lastError
    }

    private static func start(port: Int) throws -> TestProcess {
        let path = try RequiredTool.redisServer.path()
        let process = try TestProcess(
            path,
            ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"],
            stdin: .null, stdout: .pipe, stderr: .pipe)
        // Redis logs this once it listens (or exits, on a port taken meanwhile).
        if process.stdout!.waitFor({ $0.contains("Ready to accept connections") }, timeout: 10) != nil { return process }
        _ = try? process.waitForExit(timeout: 1)
        throw TestFailure("redis-server did not start on port \(port):\n\(process.transcript)")
    }

    /// SIGKILL: Redis gone at once, as in a crash.
    public func kill() throws {
        guard let process = self.process.withLock({ current in defer { current = nil }; return current }) else { return }
        process.signal(.kill)
        _ = try? process.waitForExit(timeout: 10)
    }

    /// Starts it again on the same port (empty: it keeps nothing).
    public func restart() throws {
        try kill()
        let process = try Self.start(port: port)
        self.process.withLock { $0 = process }
    }

    /// A new connection for the test's own commands.
    public func client(timeout: Double = 5) throws -> RedisTestClient { try RedisTestClient(port: port, timeout: timeout) }

    deinit { try? kill() }
}

/// A blocking Redis client for tests, on the project's RESP2 codec, with a
/// timeout on every read.
public final class RedisTestClient {
    private let socket: Socket
    private var decoder = RESPDecoder()
    private var values: [RESPValue] = []

    public init(port: Int, timeout: Double = 5) throws {
        Signals.ignoreBrokenPipe()
        socket = try Socket.connect(host: "127.0.0.1", port: port, timeout: timeout)
        try socket.setReceiveTimeout(seconds: timeout)
        try socket.setSendTimeout(seconds: timeout)
    }

    deinit { socket.close() }

    /// Sends one command and returns its reply.
    public func command(_ arguments: [String]) throws -> RESPValue {
        try socket.writeAll(RESP.command(arguments))
        return try next()
    }

    /// The next value Redis sends (a reply, or a message once subscribed).
    public func next() throws -> RESPValue {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while values.isEmpty {
            let result = try buffer.withUnsafeMutableBytes { try socket.read(into: $0) }
            switch result {
            case .bytes(let count): try decoder.decode(Array(buffer[..<count]), into: &values)
            case .endOfFile: throw TestFailure("Redis closed the connection")
            case .wouldBlock: throw TestFailure("timed out waiting for Redis")
            }
        }
        return values.removeFirst()
    }

    /// A hash's fields and values (`HGETALL`); empty if there is no such key.
    public func hash(_ key: String) throws -> [String: String] {
        let flat = (try command(["HGETALL", key]).elements ?? []).map { $0.text ?? "?" }
        return Dictionary(uniqueKeysWithValues: stride(from: 0, to: flat.count - 1, by: 2).map { (flat[$0], flat[$0 + 1]) })
    }

    /// The messages published on the channel(s) subscribed to, until `timeout` passes quietly.
    public func messages(quietFor timeout: Double) throws -> [String] {
        try socket.setReceiveTimeout(seconds: timeout)
        var messages: [String] = []
        while true {
            guard let value = try? next() else { return messages }
            if let parts = value.elements, parts.count == 3, parts[0].text == "message", let text = parts[2].text { messages.append(text) }
        }
    }
}
