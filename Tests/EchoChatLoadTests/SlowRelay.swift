import EchoChatPOSIX
import EchoChatTestSupport
import Foundation

/// A TCP relay in front of a real server that passes the server's bytes on
/// to each client slowly but steadily (`bytesPerTick` every `tick` seconds),
/// and the client's bytes to the server at full speed: a server that keeps
/// delivering, late. Everything the server sends arrives, intact and in order.
final class SlowRelay: Sendable {
    let port: Int
    private let listener: Socket
    private let stopped = Lock(false)
    /// The accepting thread and one per connection; `stop()` joins them all.
    private let threads = Lock<[ThreadHandle]>([])

    init(upstreamPort: Int, bytesPerTick: Int, tick: Double) throws {
        Signals.ignoreBrokenPipe()
        listener = try Socket.listen(host: "127.0.0.1", port: 0, nonBlocking: false)
        port = try listener.localAddress().port
        let listener = self.listener
        let stopped = self.stopped
        let threads = self.threads
        let acceptor = try Threads.spawn(name: "relay-accept") {
            while true {
                guard case .done(let client) = try? listener.accept(nonBlocking: false) else { return }
                if stopped.withLock({ $0 }) {
                    client.close()
                    return
                }
                guard let upstream = try? Socket.connect(host: "127.0.0.1", port: upstreamPort, timeout: 10) else {
                    client.close()
                    continue
                }
                // One thread per connection: it copies the server's side itself,
                // the client's side on a second thread, and closes both sockets.
                let relay = try? Threads.spawn(name: "relay") {
                    let toServer = try? Threads.spawn(name: "relay-up") { Self.copy(from: client, to: upstream) }
                    if toServer != nil { Self.copy(from: upstream, to: client, bytesPerTick: bytesPerTick, tick: tick) }
                    toServer?.join()
                    client.close()
                    upstream.close()
                }
                guard let relay else {
                    client.close()
                    upstream.close()
                    continue
                }
                threads.withLock { $0.append(relay) }
            }
        }
        threads.withLock { $0.append(acceptor) }
    }

    /// Stops accepting, waits for every thread (a connection's end when both
    /// sides have closed, or after their 30 s receive timeouts), closes the listener.
    func stop() {
        stopped.withLock { $0 = true }
        listener.shutdownRead()
        let acceptor = threads.withLock { $0.first }
        acceptor?.join()
        for handle in threads.withLock({ $0.dropFirst() }) { handle.join() }
        listener.close()
    }

    /// Copies until end of file or an error, then shuts the other side's
    /// sending half (and this side's receiving half, to wake the other copier).
    private static func copy(from source: Socket, to destination: Socket, bytesPerTick: Int = 65536, tick: Double = 0) {
        defer {
            destination.shutdownWrite()
            source.shutdownRead()
        }
        try? source.setReceiveTimeout(seconds: 30)
        var buffer = [UInt8](repeating: 0, count: bytesPerTick)
        while true {
            let result = buffer.withUnsafeMutableBytes { try? source.read(into: $0) }
            guard case .bytes(let count) = result else { return }
            let sent: Bool = buffer.withUnsafeBytes { raw in
                (try? destination.writeAll(UnsafeRawBufferPointer(rebasing: raw[0..<count]))) != nil
            }
            guard sent else { return }
            if tick > 0 { usleep(UInt32(tick * 1e6)) }
        }
    }
}
