import EchoChatCore
import Glibc
import EchoChatPOSIX
import Synchronization
import Testing

@testable import EchoChatServer

/// The connection layer's way to wake a connection's owner from another
/// thread (the file store's, the cluster link's).
@Suite("Connection layer: waking owners", .ownThreads)
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

/// A loop's inbox once it has stopped: mail that comes later (another loop
/// routing a recipient's lines, the file store, the cluster link) must not
/// be kept, or the connections it names keep the layer, which keeps the
/// inbox: a cycle never freed (LeakSanitizer caught it at a reactors
/// server's exit).
@Suite("Control requests: a stopped loop's inbox", .ownThreads)
struct StoppedInboxTests {
    @Test func aStoppedInboxKeepsNoConnectionAndClosesLateHandOvers() throws {
        var configuration = ServerConfiguration()
        configuration.mode = .chat
        let context = ServerContext(configuration: configuration, logger: Logger(level: .error))
        let inbox = try ControlRequests()
        let layer = ConnectionLayer(context: context, strategy: .epoll, inboxes: [inbox])
        func connection(token: UInt64) -> Connection {
            var pair: [Int32] = [0, 0]
            precondition(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0)
            close(pair[1])
            let machine = ConnectionMachine(mode: .chat, settings: ConnectionSettings(limits: Limits()), now: 0)
            return Connection(
                socket: Socket(descriptor: pair[0]), token: token, layer: layer, owner: layer.counters.owners[0], machine: machine)
        }
        weak var woken: Connection?
        weak var handed: Connection?
        weak var late: Connection?
        do {
            let first = connection(token: 1)
            let second = connection(token: 2)
            let third = connection(token: 3)
            (woken, handed, late) = (first, second, third)
            inbox.wake(first)
            inbox.hand([second])
            let leftOver = inbox.close()
            #expect(leftOver.count == 1 && leftOver.first === second)
            for connection in leftOver { connection.forceClose() }
            inbox.wake(first)
            inbox.wake([first, second])
            inbox.hand([third])
            #expect(third.isClosed, "a hand-over to a stopped loop is closed, not kept")
            var mail: [Connection] = []
            inbox.takeWoken(swapping: &mail)
            #expect(mail.isEmpty)
            #expect(inbox.takeAccepted().isEmpty)
            first.forceClose()
        }
        #expect(woken == nil, "the inbox still holds a woken connection")
        #expect(handed == nil, "the inbox still holds a handed-over connection")
        #expect(late == nil, "the inbox still holds a late hand-over")
        _ = layer
    }
}
