import EchoChatCore
import Glibc
import EchoChatPOSIX
import EchoChatServer
import EchoChatTestSupport
import Foundation
import Testing

/// Rules the connection layer owns, checked on the wire against every strategy.
@Suite("Connection layer", .ownThreads)
struct ConnectionLayerTests {
    /// Echo backpressure: reading stops when `max-output` is queued and
    /// resumes once the queue is down to half, not when it is empty.
    @Test(arguments: Strategy.tested)
    func echoResumesReadingAtHalfTheQueue(strategy: Strategy) throws {
        // Larger than the most a socket's send buffer can take (tcp_wmem's
        // 4 MiB), so the queue drains in several writes and a resume at an
        // empty queue cannot pass for a resume at half.
        let maxOutput = 16 * 1024 * 1024
        let server = try ServerProcess(["--max-output", String(maxOutput), "--log-level", "debug"], strategy: strategy)
        // A fixed window (no autotuning), big enough to avoid TCP's small-window stalls.
        let client = try server.connect(timeout: 10, receiveBuffer: 256 * 1024)
        // Send until the server stops reading (our send buffer fills), on a
        // helper thread, while this one reads nothing yet.
        let total = 48 * 1024 * 1024
        let socket = client.socket
        let writer = try Threads.spawn(name: "test-writer") {
            try? socket.writeAll([UInt8](repeating: 0x61, count: total))
        }
        defer { writer.join() }
        let paused = server.log.waitFor({ $0.contains("paused reading") }, timeout: 20)
        #expect(paused != nil, "the server never paused reading; log:\n\(server.log.text.suffix(1500))")
        // Now read everything, as fast as we can: the server stops a flush
        // where its queue reaches half, however fast the reader, so what it
        // logs on resuming is at most half, and at most one write (about the
        // 4 MiB of tcp_wmem's maximum) below it: far from empty.
        var received = 0
        while received < total {
            received += try client.read(count: min(65536, total - received)).count
        }
        let line = try #require(server.log.lines.first(where: { $0.contains("resumed reading") }))
        let queued = try #require(line.split(separator: " ").reversed().dropFirst(2).first.flatMap { Int($0) })
        #expect(queued <= maxOutput / 2, "\(line)")
        #expect(queued > 0, "resumed only once the queue was empty: \(line)")
    }

    /// 200 chat clients in one room each send 64 KB of 4,000-byte lines at
    /// once: the server's peak memory stays within `max-output` per client
    /// plus a fixed overhead, because the limit holds when a line is queued.
    /// None of them reads: each is dropped as a slow consumer, or (its own
    /// queue past half of max-output, so its input no longer handled, and
    /// nobody left to push it over) freed by the send timeout.
    @Test(arguments: Strategy.tested)
    func aFanOutBurstStaysWithinMaxOutputPerClient(strategy: Strategy) throws {
        let clients = 200
        let maxOutput = 256 * 1024
        let server = try ServerProcess(
            ["--mode", "chat", "--max-output", String(maxOutput), "--max-clients", "1000", "--send-timeout", "2"],
            strategy: strategy)
        // The observer watches from another room, so the burst is not for it.
        let observer = try server.connect(timeout: 20)
        _ = try observer.readLine()
        try observer.send("/join watch\n")
        _ = try observer.readLine()
        var members: [TestClient] = []
        for _ in 0..<clients {
            let client = try server.connect(timeout: 20)
            _ = try client.readLine()
            members.append(client)
        }
        let baseline = try peakResidentBytes(server.pid)
        let line = String(repeating: "x", count: 3999) + "\n"
        let burst = String(repeating: line, count: 16)  // 64,000 bytes
        for member in members {
            try member.send(burst)
            member.shutdownWrite()
        }
        // Each member's session ends once the server has handled its burst
        // (or dropped it as a slow consumer): wait on the server's own count.
        let deadline = Date().addingTimeInterval(60)
        var connected = clients + 1
        while connected > 1 && Date() < deadline {
            try observer.send("/stats\n")
            let stats = try observer.readLines(until: { $0.hasPrefix("* stats:") }).last ?? ""
            connected = Int(try parseStats(stats)["clients"] ?? "") ?? connected
        }
        #expect(connected == 1, "\(connected - 1) members still connected")
        let peak = try peakResidentBytes(server.pid)
        // A sanitizer's shadow memory grows with the memory it watches (the
        // server is built with the same sanitizer as this test): allow for it.
        // AddressSanitizer also keeps freed memory poisoned for a while, to
        // catch a use after free: up to its quarantine_size_mb, 256 MiB.
        let factor = isSanitized ? 4 : 1
        let quarantine = isAddressSanitized ? 256 * 1024 * 1024 : 0
        let bound = baseline + factor * (clients * maxOutput + 64 * 1024 * 1024) + quarantine
        #expect(peak <= bound, "peak RSS \(peak / 1_048_576) MiB > \(bound / 1_048_576) MiB (baseline \(baseline / 1_048_576) MiB)")
        for member in members { member.close() }
        #expect(try server.stop() == 0)
    }
}

/// Whether this test process (and so the server built with it) runs under
/// ThreadSanitizer or AddressSanitizer: their runtimes define these symbols.
var isSanitized: Bool {
    let names: [String] = ["__tsan_init", "__asan_init"]
    return names.contains { name in dlsym(UnsafeMutableRawPointer(bitPattern: 0), name) != nil }
}

/// Whether this test process (and so the server) runs under AddressSanitizer.
var isAddressSanitized: Bool { dlsym(UnsafeMutableRawPointer(bitPattern: 0), "__asan_init") != nil }

/// VmHWM of a process: its peak resident set, in bytes.
func peakResidentBytes(_ pid: Int32) throws -> Int {
    let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
    guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
        let kib = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) })
    else { throw TestFailure("no VmHWM in /proc/\(pid)/status") }
    return kib * 1024
}
