import EchoChatPOSIX
import EchoChatTestSupport
import Foundation
import Testing

/// The libc layer's small pieces, in memory or on loopback.
@Suite("POSIX layer", .ownThreads)
struct POSIXTests {
    @Test(arguments: [("", 0), ("a", 0), ("\n", 1), ("a\nb\n\n", 3), ("\r\n\r", 1)])
    func countNewlinesCountsLFBytes(input: String, count: Int) {
        #expect(Array(input.utf8).withUnsafeBytes { countNewlines($0) } == count)
    }

    @Test func countNewlinesOnALargeBufferAndItsSlices() {
        var input = [UInt8](repeating: 0x61, count: 100_003)
        for index in stride(from: 0, to: input.count, by: 7) { input[index] = 0x0A }
        #expect(input.withUnsafeBytes { countNewlines($0) } == (100_003 + 6) / 7)
        // A slice must not count past its end.
        #expect(input.withUnsafeBytes { countNewlines(UnsafeRawBufferPointer(rebasing: $0[1..<7])) } == 0)
        #expect(input.withUnsafeBytes { countNewlines(UnsafeRawBufferPointer(rebasing: $0[1..<8])) } == 1)
        // Nothing but LF: every vector lane counts past 255 (its counters must be summed in time).
        let newlines = [UInt8](repeating: 0x0A, count: 10_007)
        #expect(newlines.withUnsafeBytes { countNewlines($0) } == 10_007)
        // Every start and length around the vector width, against a plain count.
        var mismatches = 0
        for start in 0..<20 {
            for length in 0..<80 {
                let slice = input[(start * 13)..<(start * 13 + length)]
                let expected = slice.filter { $0 == 0x0A }.count
                let counted = input.withUnsafeBytes {
                    countNewlines(UnsafeRawBufferPointer(rebasing: $0[(start * 13)..<(start * 13 + length)]))
                }
                if counted != expected { mismatches += 1 }
            }
        }
        #expect(mismatches == 0)
    }

    @Test func errorsNameTheOperationAndTheReason() {
        let error = SystemError("read 127.0.0.1:7007", .connectionReset)
        #expect(error.description == "read 127.0.0.1:7007: Connection reset by peer")
        #expect(Errno.tooManyOpenFiles.isDescriptorExhaustion)
        #expect(!Errno.connectionReset.isDescriptorExhaustion)
    }

    @Test func connectingToAClosedPortIsATypedError() throws {
        let listener = try Socket.listen(host: "127.0.0.1", port: 0)
        let port = try listener.localAddress().port
        listener.close()
        #expect(throws: SystemError.self) { try Socket.connect(host: "127.0.0.1", port: port, timeout: 5) }
        do {
            _ = try Socket.connect(host: "127.0.0.1", port: port, timeout: 5)
        } catch {
            #expect(error.errno == .connectionRefused)
            #expect(error.description.hasSuffix("Connection refused"))
        }
    }

    @Test func readIsAValueForWouldBlockAndEndOfFile() throws {
        let listener = try Socket.listen(host: "127.0.0.1", port: 0)
        defer { listener.close() }
        let client = try Socket.connect(host: "127.0.0.1", port: try listener.localAddress().port)
        defer { client.close() }
        try listener.setNonBlocking(false)
        guard case .done(let server) = try listener.accept(nonBlocking: true) else {
            Issue.record("no connection to accept")
            return
        }
        defer { server.close() }
        var buffer = [UInt8](repeating: 0, count: 16)
        #expect(try buffer.withUnsafeMutableBytes { try server.read(into: $0) } == .wouldBlock)
        try client.writeAll(Array("hi".utf8))
        client.shutdownWrite()
        try server.setNonBlocking(false)
        #expect(try buffer.withUnsafeMutableBytes { try server.read(into: $0) } == .bytes(2))
        #expect(try buffer.withUnsafeMutableBytes { try server.read(into: $0) } == .endOfFile)
    }

    /// Four threads add to one counter under the lock; the total is exact.
    /// (Under `--sanitize=thread` this also shows TSan sees the lock.)
    @Test func lockExcludes() throws {
        let counter = Lock(0)
        let done = DispatchSemaphore(value: 0)
        for _ in 0..<4 {
            Thread {
                for _ in 0..<10_000 { counter.withLock { $0 += 1 } }
                done.signal()
            }.start()
        }
        for _ in 0..<4 { #expect(done.wait(timeout: .now() + 30) == .success) }
        #expect(counter.withLock { $0 } == 40_000)
    }

    /// An owner is the thread that made it, and only that one (the debug
    /// trap in `assertCurrent()` cannot be tested without crashing).
    @Test func ownerThreadIsTheCreatingThread() throws {
        let owner = OwnerThread()
        #expect(owner.isCurrent)
        owner.assertCurrent()
        let elsewhere = Lock<Bool?>(nil)
        try Threads.spawn(name: "not-owner") { elsewhere.withLock { $0 = owner.isCurrent } }.join()
        #expect(elsewhere.withLock { $0 } == false)
    }
}
