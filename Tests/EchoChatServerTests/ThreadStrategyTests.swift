import EchoChatPOSIX
import EchoChatServer
import EchoChatTestSupport
import Foundation
import Testing

/// The thread strategy's own part: starting a thread per client.
@Suite("Thread strategy: starting client threads", .ownThreads)
struct ThreadStrategyTests {
    /// A burst of clients whose threads cannot start (no room to map a
    /// stack): each is closed and logged, none is left waiting for a thread
    /// that will never come, and once threads can start again the server
    /// serves the next client and stops without waiting for threads that
    /// never started.
    @Test func clientsWhoseThreadsCannotStartAreClosedNotLeftWaiting() throws {
        let server = try ServerProcess(["--mode", "echo", "--thread-stack", "64M", "--shutdown-timeout", "10"], strategy: .thread)
        // Room for the server's allocations, not for one 64 MiB stack.
        try server.limitAddressSpace(toMoreThanNowBy: 32 << 20)
        // Stopped, the server accepts nothing: the five connect in the
        // backlog, and the acceptor takes them in one batch when it goes on.
        #expect(server.signal(Signal(rawValue: SIGSTOP)))
        let clients = try (0..<5).map { _ in try server.connect(timeout: 10) }
        #expect(server.signal(Signal(rawValue: SIGCONT)))
        for (index, client) in clients.enumerated() {
            #expect(try client.isClosedByServer(), "client \(index) was not closed")
        }
        #expect(server.log.waitFor({ $0.contains("cannot start a thread for") }, timeout: 10) != nil, "\(server.log.text)")

        try server.limitAddressSpace(toMoreThanNowBy: nil)
        let client = try server.connect()
        try client.send("threads again\n")
        #expect(try client.readLine() == "threads again")
        client.close()

        #expect(try server.stop() == 0)
        #expect(!server.log.lines.contains { $0.contains("still busy") }, "\(server.log.text)")
    }
}
