import EchoChatCore
import EchoChatPOSIX
import Synchronization
import Testing

@testable import EchoChatServer

/// The connection layer's way to wake a connection's owner from another
/// thread (the file store's, the cluster link's).
@Suite("Connection layer: waking owners")
struct WakerTests {
    /// Each wake-up once grew the next one's call chain by two thunks (the
    /// closure was a `Lock`'s value directly, reabstracted and written back
    /// on every access), so a long-running server slowed down with every
    /// wake-up and, at last, overflowed the stack: 300,000 wake-ups would
    /// nest 600,000 calls. Now the chain stays one call deep.
    @Test func wakeUpsDoNotPileUp() {
        var configuration = ServerConfiguration()
        configuration.mode = .chat
        let context = ServerContext(configuration: configuration, logger: Logger(level: .error))
        let layer = ConnectionLayer(context: context, strategy: .epoll)
        let woken = Atomic<Int>(0)
        layer.setWaker { _ in woken.add(1, ordering: .relaxed) }
        let machine = ConnectionMachine(mode: .chat, settings: ConnectionSettings(limits: Limits()), now: 0)
        let connection = Connection(
            socket: Socket(descriptor: -1), token: 1, layer: layer, owner: layer.counters.owners[0], machine: machine)
        let count = 300_000
        for _ in 0..<count { layer.wake(connection) }
        #expect(woken.load(ordering: .relaxed) == count)
    }
}
