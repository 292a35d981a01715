import CEchoChatShim
import Glibc

/// An `errno` value with Swift names for the codes the servers branch on and
/// `strerror` text for the rest (after swift-system's `Errno`).
public struct Errno: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32

    public init(rawValue: Int32) { self.rawValue = rawValue }

    /// The calling thread's current `errno`.
    public static var current: Errno { Errno(rawValue: cechochat_errno()) }

    public static let interrupted = Errno(rawValue: EINTR)
    public static let wouldBlock = Errno(rawValue: EAGAIN)
    public static let badFileDescriptor = Errno(rawValue: EBADF)
    public static let badAddress = Errno(rawValue: EFAULT)
    public static let invalidArgument = Errno(rawValue: EINVAL)
    public static let tooManyOpenFiles = Errno(rawValue: EMFILE)
    public static let tooManyOpenFilesInSystem = Errno(rawValue: ENFILE)
    public static let connectionAborted = Errno(rawValue: ECONNABORTED)
    public static let connectionReset = Errno(rawValue: ECONNRESET)
    public static let connectionRefused = Errno(rawValue: ECONNREFUSED)
    public static let brokenPipe = Errno(rawValue: EPIPE)
    public static let timedOut = Errno(rawValue: ETIMEDOUT)
    public static let inProgress = Errno(rawValue: EINPROGRESS)
    public static let exists = Errno(rawValue: EEXIST)
    public static let noSpace = Errno(rawValue: ENOSPC)
    public static let noSuchEntry = Errno(rawValue: ENOENT)

    /// Out of descriptors, for this process or the whole system: accept(2) can
    /// fail this way while the listener stays readable.
    public var isDescriptorExhaustion: Bool {
        self == .tooManyOpenFiles || self == .tooManyOpenFilesInSystem
    }

    /// `strerror(3)` text, e.g. "Connection reset by peer".
    public var description: String {
        var buffer = [CChar](repeating: 0, count: 256)
        let status = buffer.withUnsafeMutableBufferPointer { strerror_r(rawValue, $0.baseAddress!, $0.count) }
        guard status == 0 else { return "errno \(rawValue)" }
        return buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }
}

/// A failed system call: the operation (and, where known, the peer) and errno,
/// rendered like Go's net errors: `read 127.0.0.1:7007: Connection reset by peer`.
public struct SystemError: Error, Sendable, CustomStringConvertible, Equatable {
    public var operation: String
    public var errno: Errno

    public init(_ operation: String, _ errno: Errno) {
        self.operation = operation
        self.errno = errno
    }

    public var description: String { errno.rawValue == 0 ? operation : "\(operation): \(errno)" }
}
