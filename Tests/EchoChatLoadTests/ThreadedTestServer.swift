import EchoChatPOSIX
import EchoChatTestSupport
import Foundation

/// The accept loop the load tests' stand-in servers share: a blocking
/// listener on 127.0.0.1 (port 0, the real port read back), one thread per
/// connection running `serve` with the connection and its number (from 1),
/// and `stop()`, which joins every thread, so none outlives its test. Each
/// `serve` closes its connection and bounds its reads with a timeout.
final class ThreadedTestServer: Sendable {
    let port: Int
    private let listener: Socket
    private let stopped = Lock(false)
    /// The accepting thread first, then one per connection.
    private let threads = Lock<[ThreadHandle]>([])

    init(name: String, serve: @escaping @Sendable (_ client: Socket, _ number: Int) -> Void) throws {
        Signals.ignoreBrokenPipe()
        listener = try Socket.listen(host: "127.0.0.1", port: 0, nonBlocking: false)
        port = try listener.localAddress().port
        let listener = self.listener
        let stopped = self.stopped
        let threads = self.threads
        let acceptor = try Threads.spawn(name: "\(name)-accept") {
            var number = 0
            while true {
                guard case .done(let client) = try? listener.accept(nonBlocking: false) else { return }
                if stopped.withLock({ $0 }) {
                    client.close()
                    return
                }
                number += 1
                let current = number
                guard let handle = try? Threads.spawn(name: name, { serve(client, current) }) else {
                    client.close()
                    continue
                }
                threads.withLock { $0.append(handle) }
            }
        }
        threads.withLock { $0.append(acceptor) }
    }

    /// Stops accepting (shutdown(2) wakes the blocked accept), waits for
    /// every thread (a connection's ends when its client has gone, or at its
    /// read timeout), then closes the listener.
    func stop() {
        stopped.withLock { $0 = true }
        listener.shutdownRead()
        // The acceptor is first; it appends no more once it has returned.
        let acceptor = threads.withLock { $0.first }
        acceptor?.join()
        for handle in threads.withLock({ $0.dropFirst() }) { handle.join() }
        listener.close()
    }
}
