import EchoChatPOSIX
import EchoChatTestSupport
import Foundation

/// A tiny echo server that misbehaves on purpose, to prove that the load
/// client notices: it echoes every connection faithfully until `after` bytes
/// have passed on it, then either flips one bit of the next byte and goes on
/// echoing, or closes the connection.
final class FaultyEchoServer: Sendable {
    enum Fault: Sendable { case flipByte, close }

    let port: Int
    private let listener: Socket
    private let stopped = Lock(false)

    init(fault: Fault, after: Int) throws {
        Signals.ignoreBrokenPipe()
        listener = try Socket.listen(host: "127.0.0.1", port: 0, nonBlocking: false)
        port = try listener.localAddress().port
        let listener = self.listener
        let stopped = self.stopped
        Thread {
            while true {
                guard case .done(let client) = try? listener.accept(nonBlocking: false) else { return }
                if stopped.withLock({ $0 }) {
                    client.close()
                    return
                }
                Thread { Self.serve(client, fault: fault, after: after) }.start()
            }
        }.start()
    }

    /// Stops accepting (shutdown(2) wakes the blocked accept).
    func stop() {
        stopped.withLock { $0 = true }
        listener.shutdownRead()
        listener.close()
    }

    private static func serve(_ client: Socket, fault: Fault, after: Int) {
        defer { client.close() }
        // Every read is bounded: a test that goes wrong cannot leave this thread behind for long.
        try? client.setReceiveTimeout(seconds: 20)
        var buffer = [UInt8](repeating: 0, count: 65536)
        var passed = 0
        var faulted = false
        while true {
            let result = buffer.withUnsafeMutableBytes { try? client.read(into: $0) }
            guard case .bytes(let count) = result else { return }
            var chunk = Array(buffer[0..<count])
            if !faulted && passed + count > after {
                faulted = true
                let index = after - passed
                switch fault {
                case .flipByte: chunk[index] ^= 0x20
                case .close:
                    try? client.writeAll(Array(chunk[0..<index]))
                    return
                }
            }
            passed += count
            do { try client.writeAll(chunk) } catch { return }
        }
    }
}
