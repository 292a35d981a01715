/// The one write-all loop, for sockets, files and standard streams alike:
/// offers what is left of `bytes` to `writeSome` until all of it is taken.
/// `writeSome` makes one write (through `syscall`, so EINTR is retried) and
/// returns how many bytes the kernel took, or `.wouldBlock`; then
/// `whenBlocked` either waits for room or throws.
@inline(__always)
func writeUntilDone(
    _ bytes: UnsafeRawBufferPointer,
    writeSome: (UnsafeRawBufferPointer) throws(SystemError) -> IOResult<Int>,
    whenBlocked: () throws(SystemError) -> Void
) throws(SystemError) {
    var offset = 0
    while offset < bytes.count {
        switch try writeSome(UnsafeRawBufferPointer(rebasing: bytes[offset...])) {
        case .done(let count): offset += count
        case .wouldBlock: try whenBlocked()
        }
    }
}
