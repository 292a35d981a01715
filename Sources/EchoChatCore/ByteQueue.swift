/// A FIFO of bytes waiting to be written: appended at the back, consumed from
/// the front as the kernel accepts them. Consuming advances an offset; the
/// storage is compacted only when the consumed part dominates, so a long
/// backlog is not moved once per partial write.
public struct ByteQueue: Sendable {
    private var storage: [UInt8] = []
    private var head = 0

    /// Capacity kept when the queue empties; a burst larger than this is
    /// returned to the allocator so idle connections stay small (thousands
    /// of connections that each once queued a few KiB must not each keep it).
    public static let retainedCapacity = 4 * 1024

    public init() {}

    public var count: Int { storage.count - head }
    public var isEmpty: Bool { head == storage.count }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        storage.append(contentsOf: bytes.assumingMemoryBound(to: UInt8.self))
    }

    public mutating func append(_ bytes: [UInt8]) {
        storage.append(contentsOf: bytes)
    }

    /// The bytes not yet consumed, oldest first; valid only during `body`.
    public func withReadableBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try storage.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[head...])) }
    }

    /// Drops the first `n` bytes (the kernel took them).
    public mutating func consume(_ n: Int) {
        precondition(n <= count, "consumed more than queued")
        head += n
        if head == storage.count {
            storage.removeAll(keepingCapacity: storage.capacity <= Self.retainedCapacity)
            head = 0
        } else if head >= 4096 && head * 2 >= storage.count {
            storage.removeFirst(head)
            head = 0
        }
    }

    /// Drops everything (a connection that is being aborted).
    public mutating func removeAll() {
        storage = []
        head = 0
    }
}
