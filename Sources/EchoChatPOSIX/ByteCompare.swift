import Glibc

/// Whether `count` bytes at `a` and `b` are equal: memcmp(3), which glibc
/// vectorizes, so the load client checks echoed bytes at memory speed.
@inline(__always)
public func bytesEqual(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer, count: Int) -> Bool {
    memcmp(a, b, count) == 0
}

/// The offset of the first LF in `count` bytes at `start`, or nil (memchr(3)).
@inline(__always)
public func firstNewline(_ start: UnsafeRawPointer, count: Int) -> Int? {
    guard count > 0, let found = memchr(start, 0x0A, count) else { return nil }
    return UnsafeRawPointer(found) - start
}
