import EchoChatPOSIX

/// A FIFO of jobs for the workers: a lock-protected array and a semaphore
/// that counts the items, so an idle worker sleeps until there is work.
final class WorkQueue<Item: Sendable>: Sendable {
    private let items = Lock<Storage>(Storage())
    private let available = Semaphore()

    struct Storage {
        var buffer: [Item] = []
        var head = 0
    }

    func push(_ item: Item) {
        items.withLock { $0.buffer.append(item) }
        available.signal()
    }

    func pop() -> Item {
        available.wait()
        return items.withLock { storage in
            let item = storage.buffer[storage.head]
            storage.head += 1
            if storage.head == storage.buffer.count {
                storage.buffer.removeAll(keepingCapacity: true)
                storage.head = 0
            } else if storage.head >= 1024 && storage.head * 2 >= storage.buffer.count {
                storage.buffer.removeFirst(storage.head)
                storage.head = 0
            }
            return item
        }
    }

    /// Items waiting for a worker (the `queue_depth` of `/stats`).
    var depth: Int { items.withLock { $0.buffer.count - $0.head } }
}
