import Glibc
import CEchoChatShim

/// LF bytes in `bytes` (echo mode's "messages"), counted 16 bytes per vector
/// compare in the C shim. memchr(3) per LF, before, was fast for 4 KiB lines
/// but cost a call per line on short ones: with 64 B messages it and this
/// count were about 30% of the epoll strategy's instructions per message.
@inline(__always)
public func countNewlines(_ bytes: UnsafeRawBufferPointer) -> Int {
    guard let base = bytes.baseAddress else { return 0 }
    return cechochat_count_byte(base, bytes.count, 0x0A)
}
