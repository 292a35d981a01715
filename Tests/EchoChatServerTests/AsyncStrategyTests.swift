import EchoChatPOSIX
import EchoChatTestSupport
import Foundation
import Testing

@testable import EchoChatServer

/// What only the async strategy can get wrong: its executor, many suspended
/// tasks, and shutdown through cancellation. (Every end-to-end suite runs
/// against it as well, through `Strategy.tested` (every case of `Strategy`).)
@Suite("Async strategy", .ownThreads)
struct AsyncStrategyTests {
    /// Every job runs on the thread that made the executor (the reactor),
    /// including a task resumed from another thread, which must come back
    /// through the locked queue and the eventfd.
    @Test func theExecutorRunsEveryJobOnTheReactorThread() throws {
        let wakeup = try Wakeup()
        defer { wakeup.close() }
        let executor = ReactorExecutor(wakeup: wakeup)
        let reactor = OwnerThread()
        let record = Lock(Record())
        let task = Task(executorPreference: executor) {
            await withDiscardingTaskGroup { group in
                for _ in 0..<4 {
                    group.addTask {
                        record.withLock { $0.onReactor.append(reactor.isCurrent) }
                        // Resumed by another thread: a remote enqueue.
                        await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
                            _ = try? Threads.spawn(name: "resumer", detached: true) { continuation.resume() }
                        }
                        record.withLock { $0.onReactor.append(reactor.isCurrent) }
                    }
                }
            }
            record.withLock { $0.finished = true }
        }
        let deadline = Date().addingTimeInterval(10)
        while !record.withLock({ $0.finished }) && Date() < deadline {
            executor.runJobs()
            if !executor.hasJobs, try Poll.readable([wakeup.descriptor], timeoutMilliseconds: 1000).first == true {
                wakeup.drain()
                executor.takeRemoteJobs()
            }
        }
        let seen = record.withLock { $0 }
        #expect(seen.finished, "the tasks did not finish")
        #expect(seen.onReactor.count == 8)
        #expect(seen.onReactor.allSatisfy { $0 }, "a job ran off the reactor thread")
        task.cancel()
    }

    private struct Record {
        var onReactor: [Bool] = []
        var finished = false
    }

    /// Hundreds of tasks suspended on idle connections, one busy one: the
    /// busy one is served throughout and every idle one still answers.
    @Test func manyIdleConnectionsAndOneBusyAreAllServed() throws {
        let server = try ServerProcess(["--mode", "echo"], strategy: .async)
        var idle: [TestClient] = []
        for _ in 0..<300 { idle.append(try server.connect(timeout: 10)) }
        let busy = try server.connect()
        for index in 0..<200 {
            try busy.send("busy \(index)\n")
            #expect(try busy.readLine() == "busy \(index)")
        }
        for (index, client) in idle.enumerated() { try client.send("idle \(index)\n") }
        for (index, client) in idle.enumerated() { #expect(try client.readLine() == "idle \(index)") }
        #expect(try server.stop() == 0)
    }

    /// A client that takes none of the megabytes queued for it cannot hold
    /// the shutdown past `shutdown-timeout`: its task is resumed at the
    /// deadline and closes it, the group ends, the server exits cleanly.
    @Test func shutdownWithAConnectionMidOutputEndsAtTheDeadline() throws {
        let server = try ServerProcess(
            ["--mode", "chat", "--max-output", "64M", "--send-timeout", "60", "--shutdown-timeout", "1",
             "--log-level", "debug"],
            strategy: .async)
        let (talker, _) = try server.joinChat()
        let (stuck, _) = try server.joinChat(receiveBuffer: .small)
        _ = try talker.readLine()
        let line = String(repeating: "z", count: 4000)
        for index in 0..<2000 { try talker.send("\(line) \(index)\n") }
        try talker.send("/stats\n")  // answered once every line before it was handled
        _ = try talker.readLines(until: { $0.hasPrefix("* stats:") })
        server.signal(.terminate)
        #expect(try talker.readLine() == "* server shutting down")
        #expect(try talker.isClosedByServer())
        #expect(try server.waitForExit(timeout: 10) == 0)
        #expect(server.log.lines.contains { $0.contains("shutdown deadline") }, "log:\n\(server.log.text.suffix(2000))")
        #expect(server.log.lines.contains { $0.contains("stopped:") })
        withExtendedLifetime(stuck) {}  // open, unread, until the end
    }
}
