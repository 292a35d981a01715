import EchoChatPOSIX
import EchoChatTestSupport
import Foundation
import Glibc
import Testing

/// The `echochat` binary `swift test` built beside the test bundle;
/// `ECHOCHAT_CLIENT` overrides.
let clientBinary = builtProduct("echochat", override: "ECHOCHAT_CLIENT")

/// A program under test, driven step by step: write to it, wait for output,
/// close its input, wait for it to exit. A thin face on the shared runner
/// `TestProcess` (every wait has a deadline; a program that exited or cannot
/// start is a thrown error; nothing it starts outlives the tests), with
/// stdout always collected: from a pipe, or from the pseudo-terminal it runs on.
final class ChildProcess {
    let process: TestProcess
    let stdout: OutputCollector
    var stderr: OutputCollector? { process.stderr }

    /// Started with pipes.
    init(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) throws {
        process = try TestProcess(executable, arguments, environment: environment)
        stdout = process.stdout!
    }

    /// Started on `terminal`: stdin, stdout and stderr are its slave side;
    /// what the program draws is collected from the master side.
    init(_ executable: String, _ arguments: [String], environment: [String: String], terminal: PseudoTerminal) throws {
        process = try TestProcess(
            executable, arguments, environment: environment, stdin: .descriptor(terminal.slave),
            stdout: .descriptor(terminal.slave), stderr: .descriptor(terminal.slave), inputDescriptor: terminal.master)
        stdout = terminal.output
    }

    func write(_ text: String) throws { try process.write(text) }
    func write(_ bytes: [UInt8]) throws { try process.write(bytes) }

    /// End of file on the program's standard input (pipes only).
    func closeInput() { process.closeInput() }

    /// Waits for the program to exit and (with pipes) for all of its output;
    /// its status (128 + n if signal n killed it). Kills it after `timeout`.
    @discardableResult
    func waitForExit(timeout: Double = 10) throws -> Int32 { try process.waitForExit(timeout: timeout) }

    @discardableResult
    func signal(_ signal: Signal) -> Bool { process.signal(signal) }

    func expectNoReports(sourceLocation: SourceLocation = #_sourceLocation) {
        process.expectNoReports(sourceLocation: sourceLocation)
    }
}

/// A program run to completion: `input` on stdin then EOF; raw bytes out.
typealias RawResult = RawProgramResult

func runRaw(
    _ executable: String, _ arguments: [String], input: [UInt8], environment: [String: String]? = nil,
    timeout: Double = 15
) throws -> RawResult {
    let child = try TestProcess(executable, arguments, environment: environment)
    // Its output is collected all along, so it cannot block on us while we write.
    try child.write(input, timeout: timeout)
    child.closeInput()
    let status = try child.waitForExit(timeout: timeout)
    child.expectNoReports()
    return RawResult(status: status, stdout: child.stdout?.data ?? [], stderr: child.stderr?.text ?? "")
}

/// The environment for a child: ours, minus NO_COLOR, plus `extra`.
func environment(_ extra: [String: String] = [:]) -> [String: String] {
    var environment = ProcessInfo.processInfo.environment
    environment["NO_COLOR"] = nil
    environment.merge(extra) { $1 }
    return environment
}

/// A TCP port on 127.0.0.1 that refuses connections for as long as the
/// returned descriptor stays open: bound, never listening (so no other
/// test can take the port meanwhile).
func refusingPort() throws -> (port: Int, descriptor: Int32) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw TestFailure("socket: \(Errno.current)") }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sockaddrPointer in
            bind(fd, sockaddrPointer, length) == 0 && getsockname(fd, sockaddrPointer, &length) == 0
        }
    }
    guard bound else { throw TestFailure("bind: \(Errno.current)") }
    return (Int(UInt16(bigEndian: address.sin_port)), fd)
}

/// Whether `text` holds an ANSI colour (SGR) sequence, ESC [ … m.
func containsColor(_ text: String) -> Bool {
    text.contains(#/\x1B\[[0-9;]*m/#)
}
