import CEchoChatShim
import Glibc

/// The outcome of a non-blocking operation: done, or the kernel would have to
/// wait. "Would block" is a value, not an error.
public enum IOResult<Value> {
    case done(Value)
    case wouldBlock
}

extension IOResult: Sendable where Value: Sendable {}
extension IOResult: Equatable where Value: Equatable {}

/// The outcome of a read: some bytes, end of file, or would block.
public enum ReadResult: Equatable, Sendable {
    case bytes(Int)
    case endOfFile
    case wouldBlock
}

/// The one place that calls into libc for anything that can fail: retries
/// EINTR, turns EAGAIN/EWOULDBLOCK into `.wouldBlock`, and every other failure
/// into a `SystemError` naming the operation. (NIO's `syscall(blocking:where:_:)`.)
/// `close(2)` must not go through here (see `closeDescriptor`). EBADF and
/// EFAULT trap in debug builds (`assertNotProgrammingError`).
@inline(__always)
func syscall<T: FixedWidthInteger>(
    _ operation: @autoclosure () -> String,
    _ body: () -> T
) throws(SystemError) -> IOResult<T> {
    while true {
        let result = body()
        if result >= 0 { return .done(result) }
        let errno = Errno(rawValue: cechochat_errno())
        if errno == .interrupted { continue }
        if errno == .wouldBlock { return .wouldBlock }
        assertNotProgrammingError(errno, operation())
        throw SystemError(operation(), errno)
    }
}

/// `syscall` for calls that cannot return EAGAIN: a would-block is an error too.
@inline(__always)
func syscallNoWait<T: FixedWidthInteger>(
    _ operation: @autoclosure () -> String,
    _ body: () -> T
) throws(SystemError) -> T {
    while true {
        let result = body()
        if result >= 0 { return result }
        let errno = Errno(rawValue: cechochat_errno())
        if errno == .interrupted { continue }
        assertNotProgrammingError(errno, operation())
        throw SystemError(operation(), errno)
    }
}

/// close(2), once: never retried, because Linux releases the descriptor even
/// when close reports EINTR, so a retry could close a descriptor another
/// thread has just been given. Any other failure is ignored (there is nothing
/// left to do with the descriptor), except EBADF: closing what is not open
/// means it was closed already, which traps in debug builds.
@inline(__always)
func closeDescriptor(_ descriptor: Int32) {
    if Glibc.close(descriptor) != 0 {
        assertNotProgrammingError(.current, "close fd \(descriptor)")
    }
}

/// EBADF (a descriptor closed twice, or used after close) and EFAULT (a bad
/// pointer) are bugs in this program, not conditions of a connection, so
/// debug builds stop right where they happen, as NIO's
/// `preconditionIsNotUnacceptableErrno` does; release builds report them
/// like any other error.
@inline(__always)
func assertNotProgrammingError(
    _ errno: Errno, _ operation: @autoclosure () -> String, file: StaticString = #fileID, line: UInt = #line
) {
    assert(
        errno != .badFileDescriptor && errno != .badAddress,
        "\(operation()): \(errno): a descriptor closed twice or used after close, or a bad pointer",
        file: file, line: line)
}
