import EchoChatPOSIX
import EchoChatTestSupport
import Foundation

/// A tiny echo server that misbehaves on purpose, to prove that the load
/// client notices: it echoes every connection faithfully until `after` bytes
/// have passed on it, then flips one bit of the next byte, or drops it, and
/// goes on echoing, or closes the connection.
final class FaultyEchoServer: Sendable {
    enum Fault: Sendable { case flipByte, dropByte, close }

    private let server: ThreadedTestServer
    var port: Int { server.port }

    init(fault: Fault, after: Int) throws {
        server = try ThreadedTestServer(name: "faulty") { client, _ in Self.serve(client, fault: fault, after: after) }
    }

    /// Stops accepting and joins every connection's thread (each ends when
    /// its client has gone, or after its 20 s receive timeout).
    func stop() { server.stop() }

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
