import EchoChatPOSIX
import Testing

@testable import EchoChatServer

/// The queues the pool and the file store hand work through.
@Suite("Work queues")
struct QueueTests {
    /// Order holds across the compactions (when the queue empties, and when
    /// over 1,024 taken items make up half the array), with pushes and takes
    /// interleaved as workers do.
    @Test func fifoKeepsOrderAcrossCompaction() {
        var fifo = FIFO<Int>()
        var next = 0
        var expected = 0
        for round in 0..<50 {
            for _ in 0..<(100 + round * 17) {
                fifo.append(next)
                next += 1
            }
            for _ in 0..<(80 + round * 13) {
                #expect(fifo.removeFirst() == expected)
                expected += 1
            }
            #expect(fifo.count == next - expected)
        }
        while fifo.count > 0 {
            #expect(fifo.removeFirst() == expected)
            expected += 1
        }
        #expect(expected == next)
    }

    /// A counting doorbell (the pool's job queue): each ring is taken once,
    /// and a take with nothing rung fails instead of blocking.
    @Test func aCountingWakeupGivesOneTakePerRing() throws {
        let bell = try Wakeup(counting: true)
        defer { bell.close() }
        #expect(!bell.take())
        for _ in 0..<3 { bell.ring() }
        #expect(bell.take() && bell.take() && bell.take())
        #expect(!bell.take())
    }
}
