import EchoChatCore
import EchoChatPOSIX
import Foundation

/// A blocking TCP client with a receive timeout on every read, so a server bug
/// fails the test instead of hanging it.
public final class TestClient {
    public let socket: Socket
    /// What was read and not yet taken (taking a line moves an offset; the
    /// front is dropped now and then, not after every line).
    private var buffer = ByteQueue()
    /// Where each read lands: one allocation per client, not one per read.
    /// Allocated last in `init`: a failed init runs no `deinit` to free it.
    private let chunk: UnsafeMutableRawBufferPointer
    private var closed = false
    public let timeout: Double

    /// `receiveBuffer`/`sendBuffer`: socket buffer sizes, set before
    /// connecting (see `Socket.connect`); a test that wants a small buffer
    /// must not set it on the connected socket.
    public init(
        host: String = "127.0.0.1", port: Int, timeout: Double = 5, receiveBuffer: Int? = nil, sendBuffer: Int? = nil
    ) throws {
        Signals.ignoreBrokenPipe()
        let socket = try Socket.connect(
            host: host, port: port, timeout: timeout, receiveBuffer: receiveBuffer, sendBuffer: sendBuffer)
        do {
            try socket.setReceiveTimeout(seconds: timeout)
            try socket.setSendTimeout(seconds: timeout)
        } catch {
            socket.close()
            throw error
        }
        self.socket = socket
        self.timeout = timeout
        chunk = .allocate(byteCount: 65536, alignment: 16)
    }

    deinit {
        close()
        chunk.deallocate()
    }

    public func close() {
        if !closed {
            closed = true
            socket.close()
        }
    }

    /// Closes with a TCP reset (SO_LINGER 0): the server sees a connection error.
    public func reset() throws {
        try socket.setResetOnClose()
        close()
    }

    public func send(_ text: String) throws { try send(Array(text.utf8)) }
    public func send(_ bytes: [UInt8]) throws { try socket.writeAll(bytes) }

    public func shutdownWrite() { socket.shutdownWrite() }

    /// What was read and not yet taken, as text (for failure messages).
    private var pending: String { buffer.withReadableBytes { String(decoding: $0, as: UTF8.self) } }

    /// Reads more bytes into the buffer; false at end of file.
    private func fill() throws -> Bool {
        let result = try socket.read(into: chunk)
        switch result {
        case .bytes(let count):
            buffer.append(UnsafeRawBufferPointer(rebasing: chunk[0..<count]))
            return true
        case .endOfFile:
            return false
        case .wouldBlock:
            throw TestFailure("timed out after \(timeout) s waiting for the server; have \(pending.debugDescription)")
        }
    }

    /// The next line in the buffer, taken, without its LF. The LF is found
    /// with memchr: in a debug build `firstIndex(of:)` runs generic code for
    /// every byte, which made 200 clients reading at once spend most of their
    /// time in the runtime.
    private func takeLine() -> String? {
        let found = buffer.withReadableBytes { raw -> (String, Int)? in
            guard let base = raw.baseAddress, let hit = memchr(base, 0x0A, raw.count) else { return nil }
            let length = base.distance(to: UnsafeRawPointer(hit))
            return (String(decoding: UnsafeRawBufferPointer(rebasing: raw[0..<length]), as: UTF8.self), length + 1)
        }
        guard let (line, taken) = found else { return nil }
        buffer.consume(taken)
        return line
    }

    /// The next line without its LF.
    public func readLine() throws -> String {
        while true {
            if let line = takeLine() { return line }
            guard try fill() else {
                throw TestFailure("connection closed while waiting for a line; have \(pending.debugDescription)")
            }
        }
    }

    public func readLines(_ count: Int) throws -> [String] {
        try (0..<count).map { _ in try readLine() }
    }

    /// Reads lines until one satisfies `predicate`; returns all of them.
    public func readLines(until predicate: (String) -> Bool) throws -> [String] {
        var lines: [String] = []
        while true {
            let line = try readLine()
            lines.append(line)
            if predicate(line) { return lines }
        }
    }

    /// Exactly `count` bytes.
    public func read(count: Int) throws -> [UInt8] {
        while buffer.count < count {
            guard try fill() else { throw TestFailure("connection closed after \(buffer.count) of \(count) bytes") }
        }
        let result = buffer.withReadableBytes { Array($0[0..<count]) }
        buffer.consume(count)
        return result
    }

    /// Everything until the server closes.
    public func readToEnd() throws -> [UInt8] {
        while try fill() {}
        defer { buffer.removeAll() }
        return buffer.withReadableBytes { Array($0) }
    }

    /// True if the server closed the connection with nothing further to read.
    public func isClosedByServer() throws -> Bool {
        try buffer.isEmpty && !fill()
    }
}
