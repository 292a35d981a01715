import Glibc

/// One descriptor held in reserve (on /dev/null) for the moment accept(2)
/// fails with EMFILE: releasing it lets the server accept the waiting client,
/// tell it the server is full and close it, instead of leaving it in the
/// backlog while a level-triggered poller spins on the listener (the trick
/// libev and nginx describe).
public struct ReserveDescriptor: ~Copyable {
    private var descriptor: Int32

    public init() {
        descriptor = open("/dev/null", O_RDONLY | O_CLOEXEC)
    }

    public var isHeld: Bool { descriptor >= 0 }

    /// Closes the reserve so one descriptor is free.
    public mutating func release() {
        if descriptor >= 0 { _ = Glibc.close(descriptor) }
        descriptor = -1
    }

    /// Takes a descriptor back into reserve; false if none is free yet.
    @discardableResult
    public mutating func reacquire() -> Bool {
        if descriptor < 0 { descriptor = open("/dev/null", O_RDONLY | O_CLOEXEC) }
        return descriptor >= 0
    }

    deinit { if descriptor >= 0 { _ = Glibc.close(descriptor) } }
}
