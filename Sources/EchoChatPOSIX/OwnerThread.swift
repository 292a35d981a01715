import Glibc

/// The thread that owns some state, so the state can assert it is only
/// touched there, as NIO's `assertInEventLoop()` does: create it on the owning
/// thread (an event loop makes it first thing in its `run()`), keep it next to
/// the state, and call `assertCurrent()` at every entry point.
///
///     let owner = OwnerThread()      // on the loop's thread
///     ...
///     owner.assertCurrent()          // traps in debug builds elsewhere
///
/// Only debug builds check; in release builds `assertCurrent()` compiles to
/// nothing. pthread_self(3), pthread_equal(3).
public struct OwnerThread: Sendable {
    // pthread_t is an integer on Linux: a plain, copyable identity.
    private let thread: pthread_t

    /// The calling thread becomes the owner.
    public init() {
        thread = pthread_self()
    }

    /// Whether the calling thread is the owner (in any build).
    public var isCurrent: Bool {
        pthread_equal(thread, pthread_self()) != 0
    }

    /// Traps in debug builds when called on any thread but the owner; does
    /// nothing in release builds.
    @inline(__always)
    public func assertCurrent(
        _ message: @autoclosure () -> String = "", file: StaticString = #fileID, line: UInt = #line
    ) {
        assert(isCurrent, "called off its owner thread" + (message().isEmpty ? "" : ": " + message()), file: file, line: line)
    }
}
