import EchoChatPOSIX
import EchoChatTestSupport
import Foundation

/// A tiny echo server that misbehaves on purpose, to prove that the load
/// client notices: it echoes every connection faithfully until `after` bytes
/// have passed on it, then flips one bit of the next byte, or drops it, and
/// goes on echoing, or closes the connection.
final class FaultyEchoServer: Sendable {
    enum Fault: Sendable { case flipByte, dropByte, close }

    let port: Int
    private let listener: Socket
    private let stopped = Lock(false)
    /// The accepting thread and one per connection; `stop()` joins them all,
    /// so none outlives the test or touches a descriptor after it is closed.
    private let threads = Lock<[ThreadHandle]>([])

    init(fault: Fault, after: Int) throws {
        Signals.ignoreBrokenPipe()
        listener = try Socket.listen(host: "127.0.0.1", port: 0, nonBlocking: false)
        port = try listener.localAddress().port
        let listener = self.listener
        let stopped = self.stopped
        let threads = self.threads
        let acceptor = try Threads.spawn(name: "faulty-accept") {
            while true {
                guard case .done(let client) = try? listener.accept(nonBlocking: false) else { return }
                if stopped.withLock({ $0 }) {
                    client.close()
                    return
                }
                guard let handle = try? Threads.spawn(name: "faulty-serve", { Self.serve(client, fault: fault, after: after) })
                else {
                    client.close()
                    continue
                }
                threads.withLock { $0.append(handle) }
            }
        }
        threads.withLock { $0.append(acceptor) }
    }

    /// Stops accepting (shutdown(2) wakes the blocked accept), waits for every
    /// thread (a connection's ends when its client has gone, or after its
    /// 20 s receive timeout), then closes the listener.
    func stop() {
        stopped.withLock { $0 = true }
        listener.shutdownRead()
        // The acceptor is first; it appends no more once it has returned.
        let acceptor = threads.withLock { $0.first }
        acceptor?.join()
        for handle in threads.withLock({ $0.dropFirst() }) { handle.join() }
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
                case .dropByte: chunk.remove(at: index)
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
