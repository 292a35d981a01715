import EchoChatPOSIX
import EchoChatTestSupport
import Foundation

/// A TCP relay in front of a real server that passes the server's bytes on
/// to each client slowly but steadily (`bytesPerTick` every `tick` seconds),
/// and the client's bytes to the server at full speed: a server that keeps
/// delivering, late. Everything the server sends arrives, intact and in order.
final class SlowRelay: Sendable {
    private let server: ThreadedTestServer
    var port: Int { server.port }

    init(upstreamPort: Int, bytesPerTick: Int, tick: Double) throws {
        server = try ThreadedTestServer(name: "relay") { client, _ in
            defer { client.close() }
            guard let upstream = try? Socket.connect(host: "127.0.0.1", port: upstreamPort, timeout: 10) else { return }
            defer { upstream.close() }
            // The server's side on this thread, the client's on a second one.
            guard let toServer = try? Threads.spawn(name: "relay-up", { Self.copy(from: client, to: upstream) }) else { return }
            Self.copy(from: upstream, to: client, bytesPerTick: bytesPerTick, tick: tick)
            toServer.join()
        }
    }

    /// Stops accepting and joins every connection's threads (each ends when
    /// both sides have closed, or after their 30 s receive timeouts).
    func stop() { server.stop() }

    /// Copies until end of file or an error, then shuts the other side's
    /// sending half (and this side's receiving half, to wake the other copier).
    private static func copy(from source: Socket, to destination: Socket, bytesPerTick: Int = 65536, tick: Double = 0) {
        defer {
            destination.shutdownWrite()
            source.shutdownRead()
        }
        try? source.setReceiveTimeout(seconds: 30)
        var buffer = [UInt8](repeating: 0, count: bytesPerTick)
        let step = Int64(tick * 1e9)
        var next = Clock.monotonicNanoseconds()
        while true {
            let result = buffer.withUnsafeMutableBytes { try? source.read(into: $0) }
            guard case .bytes(let count) = result else { return }
            let sent: Bool = buffer.withUnsafeBytes { raw in
                (try? destination.writeAll(UnsafeRawBufferPointer(rebasing: raw[0..<count]))) != nil
            }
            guard sent else { return }
            // The throttle itself, not a wait for an event: at most
            // `bytesPerTick` per tick, on a fixed schedule.
            if step > 0 {
                next = max(next + step, Clock.monotonicNanoseconds())
                Clock.sleep(untilMonotonicNanoseconds: next)
            }
        }
    }
}
