import Glibc

/// A file descriptor the process did not open itself and must not close or
/// reconfigure: standard input, output and error. Never switched to
/// O_NONBLOCK, because that flag lives in the open file description shared
/// with the parent shell and other processes; readiness comes from `Poll`.
public struct FileDescriptor: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32

    public init(rawValue: Int32) { self.rawValue = rawValue }

    public static let standardInput = FileDescriptor(rawValue: STDIN_FILENO)
    public static let standardOutput = FileDescriptor(rawValue: STDOUT_FILENO)
    public static let standardError = FileDescriptor(rawValue: STDERR_FILENO)

    public var description: String { "fd \(rawValue)" }

    /// read(2) into `buffer`. A terminal that hung up reports EIO, which is
    /// an error here; callers treat it like end of file.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> ReadResult {
        let fd = rawValue
        switch try syscall("read \(self)", { Glibc.read(fd, buffer.baseAddress, buffer.count) }) {
        case .done(0): return .endOfFile
        case .done(let count): return .bytes(count)
        case .wouldBlock: return .wouldBlock
        }
    }

    /// Writes all of `bytes` with write(2). If someone else made the
    /// descriptor non-blocking, waits for it with poll(2) rather than spin
    /// or drop output.
    public func writeAll(_ bytes: UnsafeRawBufferPointer) throws(SystemError) {
        let fd = rawValue
        try writeUntilDone(
            bytes,
            writeSome: { rest throws(SystemError) in
                try syscall("write \(self)", { Glibc.write(fd, rest.baseAddress, rest.count) })
            },
            whenBlocked: { () throws(SystemError) in
                _ = try Poll.waitUntilWritable(fd, timeoutMilliseconds: -1)
            })
    }

    public func writeAll(_ bytes: [UInt8]) throws(SystemError) {
        let failure: SystemError? = bytes.withUnsafeBytes { raw in
            do throws(SystemError) { try writeAll(raw) } catch { return error }
            return nil
        }
        if let failure { throw failure }
    }
}
