import EchoChatPOSIX
import EchoChatServer
import EchoChatTestSupport
import Foundation
import Testing

/// Echo mode (PROTOCOL.md §2) end to end, against every strategy.
@Suite("Echo mode")
struct EchoTests {
    @Test(arguments: Strategy.allCases)
    func echoesALine(strategy: Strategy) throws {
        let server = try ServerProcess(["--mode", "echo"], strategy: strategy)
        let client = try server.connect()
        try client.send("hello\n")
        #expect(try client.readLine() == "hello")
    }

    @Test(arguments: Strategy.allCases)
    func isBinarySafe(strategy: Strategy) throws {
        let server = try ServerProcess(["--mode", "echo"], strategy: strategy)
        let client = try server.connect()
        // Every byte value, NUL and invalid UTF-8 included, no trailing newline.
        let bytes: [UInt8] = (0..<4).flatMap { _ in (0...255).map { UInt8($0) } } + [0xFF, 0xFE, 0x00, 0xC3]
        try client.send(bytes)
        #expect(try client.read(count: bytes.count) == bytes)
    }

    @Test(arguments: Strategy.allCases)
    func echoesOneMebibyteWhileSending(strategy: Strategy) throws {
        let server = try ServerProcess(["--mode", "echo"], strategy: strategy)
        let client = try server.connect()
        var generator = SeededGenerator(seed: 42)
        let payload = (0..<(1 << 20)).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let socket = client.socket
        let writer = Thread {
            try? socket.writeAll(payload)
        }
        writer.start()
        let echoed = try client.read(count: payload.count)
        #expect(echoed == payload)
    }

    @Test(arguments: Strategy.allCases)
    func halfCloseDeliversEverythingThenCloses(strategy: Strategy) throws {
        let server = try ServerProcess(["--mode", "echo"], strategy: strategy)
        let client = try server.connect()
        try client.send("a\nb\nno newline at the end")
        client.shutdownWrite()
        #expect(String(decoding: try client.readToEnd(), as: UTF8.self) == "a\nb\nno newline at the end")
    }

    @Test(arguments: Strategy.allCases)
    func servesFiftyClientsAtOnce(strategy: Strategy) throws {
        let server = try ServerProcess(["--mode", "echo"], strategy: strategy)
        let clients = try (0..<50).map { _ in try server.connect() }
        // Interleave: every client sends before any reads.
        for (index, client) in clients.enumerated() {
            try client.send("client \(index) says hello\n")
        }
        for round in 0..<3 {
            for (index, client) in clients.enumerated().reversed() {
                try client.send("round \(round) from \(index)\n")
            }
        }
        for (index, client) in clients.enumerated() {
            #expect(try client.readLine() == "client \(index) says hello")
            for round in 0..<3 { #expect(try client.readLine() == "round \(round) from \(index)") }
        }
    }

    /// A client that sends without reading is throttled (the server stops
    /// reading it), loses nothing, and does not slow anyone else down.
    @Test(arguments: Strategy.allCases)
    func backpressureLosesNothingAndSparesOthers(strategy: Strategy) throws {
        let server = try ServerProcess(["--mode", "echo", "--max-output", "64K"], strategy: strategy)
        let flooder = try server.connect()
        // With the client's buffers pinned small, what the path can hold
        // without the server reading is far below 8 MiB (the server's queue,
        // its un-grown receive buffer, ours): the writer can only finish
        // without stalling if the server buffers without bound.
        try flooder.socket.setReceiveBufferSize(64 * 1024)
        try flooder.socket.setSendBufferSize(256 * 1024)
        let payload = (0..<(8 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9) }
        try flooder.socket.setSendTimeout(seconds: 0.3)
        let writer = Writer(socket: flooder.socket, payload: payload)
        writer.start()
        // The writer stalls: a send made no progress for 0.3 s.
        #expect(writer.waitUntilStalled(timeout: 20), "the server never stopped reading the flooder")
        // While the flooder is stuck, another client is served at once.
        let other = try server.connect()
        for index in 0..<20 {
            try other.send("ping \(index)\n")
            #expect(try other.readLine() == "ping \(index)")
        }
        // Now read everything back: every byte, in order.
        let echoed = try flooder.read(count: payload.count)
        #expect(echoed == payload)
        #expect(writer.waitUntilFinished(timeout: 20))
    }

    @Test(arguments: Strategy.allCases)
    func netcatRoundTrip(strategy: Strategy) throws {
        let server = try ServerProcess(["--mode", "echo"], strategy: strategy)
        let output = try runNetcat(port: server.port, input: "hello\nworld\n")
        #expect(output == "hello\nworld\n")
    }
}

/// Writes a payload on its own thread, retrying sends that time out, and
/// reports (through a condition variable) when it first stalls and when it ends.
final class Writer: @unchecked Sendable {
    // `stalled` and `finished` are protected by `condition`; the rest is immutable.
    private let socket: Socket
    private let payload: [UInt8]
    private let condition = NSCondition()
    private var stalled = false
    private var finished = false

    init(socket: Socket, payload: [UInt8]) {
        self.socket = socket
        self.payload = payload
    }

    func start() {
        Thread { [self] in
            let deadline = Date().addingTimeInterval(60)
            payload.withUnsafeBytes { bytes in
                var offset = 0
                while offset < bytes.count && Date() < deadline {
                    switch try? socket.write(UnsafeRawBufferPointer(rebasing: bytes[offset...])) {
                    case .done(let count)?: offset += count
                    case .wouldBlock?: update { stalled = true }  // SO_SNDTIMEO expired
                    case nil: return
                    }
                }
            }
            update { finished = true }
        }.start()
    }

    private func update(_ change: () -> Void) {
        condition.lock()
        change()
        condition.broadcast()
        condition.unlock()
    }

    private func wait(timeout: Double, for predicate: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        while !predicate() {
            if !condition.wait(until: deadline) { return predicate() }
        }
        return true
    }

    func waitUntilStalled(timeout: Double) -> Bool { wait(timeout: timeout) { stalled } }
    func waitUntilFinished(timeout: Double) -> Bool { wait(timeout: timeout) { finished } }
}

/// A fixed-seed generator so failures are reproducible (SplitMix64).
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
