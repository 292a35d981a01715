import EchoChatServer
import Foundation

extension ServerProcess {
    /// Connects a chat client and reads its welcome line; returns the client
    /// and its guest nick. Others in #lobby must read the join notice.
    public func joinChat() throws -> (client: TestClient, nick: String) {
        let client = try connect()
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

/// Runs `body` on its own thread; `value(timeout:)` waits for its result.
/// For a test that must keep one client busy while it waits on another.
public final class Background<T>: @unchecked Sendable {
    // `result` is written once by the worker thread, then read after `done` signals.
    private var result: Result<T, any Error>?
    private let done = DispatchSemaphore(value: 0)

    public init(_ body: @escaping () throws -> T) {
        let box = UncheckedBox(body)
        Thread { [self] in
            result = Result { try box.value() }
            done.signal()
        }.start()
    }

    public func value(timeout: Double) throws -> T {
        guard done.wait(timeout: .now() + timeout) == .success, let result else {
            throw TestFailure("background work did not finish within \(timeout) s")
        }
        return try result.get()
    }
}

/// Hands a non-Sendable value to exactly one other thread, which then owns it.
public struct UncheckedBox<T>: @unchecked Sendable {
    public let value: T
    public init(_ value: T) { self.value = value }
}
