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
