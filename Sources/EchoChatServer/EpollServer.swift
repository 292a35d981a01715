import EchoChatCore
import EchoChatPOSIX

/// The epoll strategy: one thread serves every connection.
///
/// - Threads: exactly one, the caller of `run()`, running one `EventLoop`
///   (which says who owns what, what blocks, fairness, timers and shutdown).
///   The signal watcher and the file store reach it only through `control`.
/// - Capacity: descriptors (`max-clients`, then RLIMIT_NOFILE; see `Acceptor`).
public final class EpollServer: ServerStrategy {
    public let control: ControlRequests
    private let layer: ConnectionLayer
    private let loop: EventLoop<ServeDirectly>

    public init(context: ServerContext, listener: Socket) throws(SystemError) {
        control = try ControlRequests()
        layer = ConnectionLayer(context: context, strategy: .epoll, inboxes: [control])
        loop = try EventLoop(layer: layer, inbox: control, listener: listener, driver: ServeDirectly())
        let control = control
        layer.setWaker { control.wake($0) }
    }

    public func serverStats() -> ServerStats { layer.serverStats() }

    public func run() throws(SystemError) { try loop.run() }
}
