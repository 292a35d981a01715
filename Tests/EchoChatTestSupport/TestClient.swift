import EchoChatPOSIX
import Foundation

/// A blocking TCP client with a receive timeout on every read, so a server bug
/// fails the test instead of hanging it.
public final class TestClient {
    public let socket: Socket
    private var buffer: [UInt8] = []
    private var closed = false
    public let timeout: Double

    /// `receiveBuffer`/`sendBuffer`: socket buffer sizes, set before
    /// connecting (see `Socket.connect`); a test that wants a small buffer
    /// must not set it on the connected socket.
    public init(
        host: String = "127.0.0.1", port: Int, timeout: Double = 5, receiveBuffer: Int? = nil, sendBuffer: Int? = nil
    ) throws {
        Signals.ignoreBrokenPipe()
        socket = try Socket.connect(
            host: host, port: port, timeout: timeout, receiveBuffer: receiveBuffer, sendBuffer: sendBuffer)
        self.timeout = timeout
        try socket.setReceiveTimeout(seconds: timeout)
        try socket.setSendTimeout(seconds: timeout)
    }

    deinit { close() }

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

    /// Reads more bytes into the buffer; false at end of file.
    private func fill() throws -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let result = try chunk.withUnsafeMutableBytes { try socket.read(into: $0) }
        switch result {
        case .bytes(let count):
            buffer.append(contentsOf: chunk[0..<count])
            return true
        case .endOfFile:
            return false
        case .wouldBlock:
            throw TestFailure("timed out after \(timeout) s waiting for the server; have \(String(decoding: buffer, as: UTF8.self).debugDescription)")
        }
    }

    /// The next line without its LF.
    public func readLine() throws -> String {
        while true {
            if let newline = buffer.firstIndex(of: 0x0A) {
                let line = String(decoding: buffer[0..<newline], as: UTF8.self)
                buffer.removeSubrange(0...newline)
                return line
            }
            guard try fill() else {
                throw TestFailure("connection closed while waiting for a line; have \(String(decoding: buffer, as: UTF8.self).debugDescription)")
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
        let result = Array(buffer[0..<count])
        buffer.removeSubrange(0..<count)
        return result
    }

    /// Everything until the server closes.
    public func readToEnd() throws -> [UInt8] {
        while try fill() {}
        defer { buffer = [] }
        return buffer
    }

    /// True if the server closed the connection with nothing further to read.
    public func isClosedByServer() throws -> Bool {
        try buffer.isEmpty && !fill()
    }
}
