import Foundation

/// What a finished program printed and how it exited.
public struct ProgramResult: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String
}

/// Runs `executable` with `arguments`, feeding `input` on stdin (then EOF),
/// and waits for it, at most `timeout` seconds (then kills it and throws).
public func runProgram(
    _ executable: String, _ arguments: [String], input: String = "", environment: [String: String]? = nil,
    timeout: Double = 30
) throws -> ProgramResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if let environment { process.environment = environment }
    let stdin = Pipe()
    let stdout = Pipe()
    let stderr = Pipe()
    process.standardInput = stdin
    process.standardOutput = stdout
    process.standardError = stderr
    try process.run()
    // Read both pipes on their own threads so a chatty program cannot block.
    let out = Background { stdout.fileHandleForReading.readDataToEndOfFile() }
    let err = Background { stderr.fileHandleForReading.readDataToEndOfFile() }
    stdin.fileHandleForWriting.write(Data(input.utf8))
    try stdin.fileHandleForWriting.close()
    let exited = Background { process.waitUntilExit() }
    do {
        try exited.value(timeout: timeout)
    } catch {
        process.terminate()
        throw TestFailure("\(executable) \(arguments) did not finish within \(timeout) s")
    }
    return ProgramResult(
        status: process.terminationStatus,
        stdout: String(decoding: try out.value(timeout: 5), as: UTF8.self),
        stderr: String(decoding: try err.value(timeout: 5), as: UTF8.self))
}

/// Runs netcat-openbsd (`nc -N` by default) with `input` on stdin and returns
/// its stdout. netcat is the user's tool, so the tests run the real one (CI
/// installs it). `-w` bounds how long it waits, so a server bug cannot hang.
public func runNetcat(
    host: String = "127.0.0.1", port: Int, input: String, arguments: [String] = ["-N"]
) throws -> String {
    let result = try runProgram("/usr/bin/env", ["nc"] + arguments + ["-w", "10", host, String(port)], input: input)
    guard result.status == 0 else { throw TestFailure("nc exited with \(result.status): \(result.stderr)") }
    return result.stdout
}
