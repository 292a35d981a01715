import Glibc

/// LF bytes in `bytes` (echo mode's "messages"), found with memchr(3), which
/// glibc vectorizes: about 0.15 µs per 4 KiB here, against 2.3 µs for a
/// byte-by-byte Swift loop, which cost echo ~15% of its throughput on 4 KiB
/// messages.
@inline(__always)
public func countNewlines(_ bytes: UnsafeRawBufferPointer) -> Int {
    guard var cursor = bytes.baseAddress else { return 0 }
    let end = cursor + bytes.count
    var count = 0
    while cursor < end, let found = memchr(cursor, 0x0A, end - cursor) {
        count &+= 1
        cursor = UnsafeRawPointer(found) + 1
    }
    return count
}
