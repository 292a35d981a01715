/// The concurrency strategies `--strategy` selects. All behave identically on
/// the wire (docs/PROTOCOL.md); they differ in threads, memory and CPU.
public enum Strategy: String, Sendable, CaseIterable {
    /// One thread, non-blocking sockets, epoll.
    case epoll
    /// One thread per client, blocking in ppoll on its own socket.
    case thread
    /// A fixed pool of workers (`--workers`) taking turns at one epoll instance.
    case pool
    /// One epoll loop per CPU (`--loops`), each owning its connections.
    case reactors
    /// One Swift task per client, all on one epoll reactor thread (its executor).
    case async
}

extension Strategy {
    /// Whether a chat line's recipients take it on threads of their own,
    /// later than the sender's thread goes on (another event loop, another
    /// worker), rather than at once in the sender's own (one loop; the
    /// thread strategy's sender writes to them itself). Then a sender is
    /// paced by them (`ChatHub`), as one loop paces it by serving them.
    var recipientsTakenElsewhere: Bool { self == .reactors || self == .pool }
}
