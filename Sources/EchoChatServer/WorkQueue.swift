import EchoChatPOSIX

/// A FIFO of jobs for a worker thread (the file store's): a lock-protected
/// `FIFO` and a semaphore that counts the items, so an idle worker sleeps
/// until there is work.
final class WorkQueue<Item: Sendable>: Sendable {
    private let items = Lock(FIFO<Item>())
    private let available = Semaphore()

    func push(_ item: Item) {
        items.withLock { $0.append(item) }
        available.signal()
    }

    func pop() -> Item {
        available.wait()
        return items.withLock { $0.removeFirst() }
    }

    /// Items waiting for the worker.
    var depth: Int { items.withLock { $0.count } }
}

/// An array used as a queue: items are taken from `head`, and the array is
/// compacted when it empties or its taken half is large, so neither end
/// costs more than amortised O(1) and the steady state does not allocate.
struct FIFO<Item> {
    private var buffer: [Item] = []
    private var head = 0

    var count: Int { buffer.count - head }

    mutating func append(_ item: Item) { buffer.append(item) }

    /// The oldest item; the queue must not be empty.
    mutating func removeFirst() -> Item {
        let item = buffer[head]
        head += 1
        if head == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 1024 && head * 2 >= buffer.count {
            buffer.removeFirst(head)
            head = 0
        }
        return item
    }
}

/// The pool's jobs: connections in service waiting for a worker, in FIFO
/// order, and a counting eventfd in the workers' poller with one count per
/// job, so each job wakes one waiting worker and is taken by one.
final class JobQueue: Sendable {
    let doorbell: Wakeup
    private let items = Lock(FIFO<Connection>())

    init() throws(SystemError) { doorbell = try Wakeup(counting: true) }

    func push(_ connection: Connection) {
        items.withLock { $0.append(connection) }
        doorbell.ring()
    }

    /// The oldest job, if this worker's count came first (another worker
    /// woken by the same ring may have taken it).
    func take() -> Connection? {
        guard doorbell.take() else { return nil }
        return items.withLock { $0.removeFirst() }
    }

    /// Jobs waiting for a worker (the `queue_depth` of `/stats`).
    var depth: Int { items.withLock { $0.count } }
}
