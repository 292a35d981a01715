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
/// `close(2)` must not go through here: Linux releases the descriptor even when
/// close reports EINTR, so retrying could close somebody else's new descriptor.
@inline(__always)
func syscall<T: FixedWidthInteger>(
    _ operation: @autoclosure () -> String,
    _ body: () -> T
) throws(SystemError) -> IOResult<T> {
    while true {
        let result = body()
        if result >= 0 { return .done(result) }
        let errno = cechochat_errno()
        if errno == EINTR { continue }
        if errno == EAGAIN || errno == EWOULDBLOCK { return .wouldBlock }
        throw SystemError(operation(), Errno(rawValue: errno))
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
        let errno = cechochat_errno()
        if errno == EINTR { continue }
        throw SystemError(operation(), Errno(rawValue: errno))
    }
}
