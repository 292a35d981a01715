import EchoChatPOSIX
import EchoChatServer
import Foundation
import Testing

extension ServerProcess {
    /// Connects a chat client and reads its welcome line; returns the client
    /// and its guest nick. Others in #lobby must read the join notice.
    public func joinChat(timeout: Double = 5, receiveBuffer: Int? = nil) throws -> (client: TestClient, nick: String) {
        let client = try connect(timeout: timeout, receiveBuffer: receiveBuffer)
        let welcome = try client.readLine()
        guard welcome.hasPrefix("* welcome "), let comma = welcome.firstIndex(of: ",") else {
            throw TestFailure("not a welcome line: \(welcome)")
        }
        let nick = String(welcome[welcome.index(welcome.startIndex, offsetBy: 10)..<comma])
        return (client, nick)
    }
}

extension TestClient {
    /// Sends `/who` and returns its reply: proof that nothing else was queued
    /// for this client before it (the server answers in order).
    public func syncWho() throws -> String {
        try send("/who\n")
        return try readLine()
    }
}

/// The `key=value` pairs of a `* stats: ` line.
public func parseStats(_ line: String) throws -> [String: String] {
    guard line.hasPrefix("* stats: ") else { throw TestFailure("not a stats line: \(line)") }
    var pairs: [String: String] = [:]
    for field in line.dropFirst(9).split(separator: " ") {
        let parts = field.split(separator: "=", maxSplits: 1)
        guard parts.count == 2 else { throw TestFailure("bad stats field \(field) in \(line)") }
        pairs[String(parts[0])] = String(parts[1])
    }
    return pairs
}

/// Runs `body` on its own (joinable) thread; `value(timeout:)` waits for its
/// result. For a test that must keep one client busy while it waits on
/// another. The thread never outlives this object: `deinit` waits for it to
/// finish (the body's own socket timeouts bound that) and joins it, so it
/// cannot go on using descriptors that a later test has been given.
public final class Background<T>: @unchecked Sendable {
    // `result` is written once by the worker thread, then read after `done` signals.
    private final class Slot: @unchecked Sendable {
        var result: Result<T, any Error>?
        let done = DispatchSemaphore(value: 0)
    }
    private let slot = Slot()
    private let thread: Lock<ThreadHandle?>
    private let finished = Lock(false)

    public init(_ body: @escaping () throws -> T) {
        let box = UncheckedBox(body)
        let slot = self.slot
        do {
            thread = Lock(try Threads.spawn(name: "test-background", stackSize: 1 << 20) {
                slot.result = Result { try box.value() }
                slot.done.signal()
            })
        } catch {
            slot.result = .failure(error)
            slot.done.signal()
            thread = Lock(nil)
        }
    }

    /// The body's result; throws its error, or after `timeout` seconds.
    public func value(timeout: Double) throws -> T {
        guard wait(timeout: timeout), let result = slot.result else {
            throw TestFailure("background work did not finish within \(timeout) s")
        }
        return try result.get()
    }

    /// Waits up to `timeout` seconds for the body to end; joins the thread if it did.
    @discardableResult
    public func wait(timeout: Double) -> Bool {
        if finished.withLock({ $0 }) { return true }
        guard slot.done.wait(timeout: .now() + timeout) == .success else { return false }
        finished.withLock { $0 = true }
        if let handle = thread.withLock({ handle in defer { handle = nil }; return handle }) { handle.join() }
        return true
    }

    deinit {
        if !wait(timeout: 120) {
            // Cannot stop a thread from outside; at least say which test leaked one.
            Issue.record("background work still running 120 s after its test let go of it")
        }
    }
}

/// Hands a non-Sendable value to exactly one other thread, which then owns it.
public struct UncheckedBox<T>: @unchecked Sendable {
    public let value: T
    public init(_ value: T) { self.value = value }
}

/// Waits (bounded) until the file at `path` has a line satisfying
/// `predicate`, and returns it: for a daemon's log file, whose writer the
/// test cannot watch. Nothing signals that a file was appended to (short of
/// inotify), so the file is re-read every 20 ms until the deadline.
public func waitForLine(inFile path: String, timeout: Double = 10, _ predicate: (String) -> Bool) -> String? {
    let deadline = Date().addingTimeInterval(timeout)
    while true {
        if let text = try? String(contentsOfFile: path, encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { predicate(String($0)) })
        {
            return String(line)
        }
        if Date() >= deadline { return nil }
        _ = try? Poll.readable([], timeoutMilliseconds: 20)
    }
}

/// What each thread of process `pid` is doing (name, state, kernel wait
/// channel), for a failure message when a process does not exit: a spin
/// shows as threads in state R, a deadlock as threads asleep on a futex.
public func threadStates(of pid: Int32) -> String {
    let directory = "/proc/\(pid)/task"
    guard let tasks = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return "no /proc entry for \(pid)" }
    return tasks.sorted().map { task in
        func read(_ name: String) -> String {
            ((try? String(contentsOfFile: "\(directory)/\(task)/\(name)", encoding: .utf8)) ?? "?")
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }
        // stat: "tid (comm) state ..."; the name may hold spaces, the state follows the last ')'.
        let stat = read("stat")
        let state = stat.lastIndex(of: ")").map { String(stat[stat.index($0, offsetBy: 2)...].prefix(1)) } ?? "?"
        return "\(task) '\(read("comm"))' state \(state) wchan \(read("wchan"))"
    }.joined(separator: "\n")
}
