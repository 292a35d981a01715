import Glibc

/// A regular file the client streams: read in pieces for an upload, written
/// in pieces for a download. One owner; `close()` is safe to call twice.
public final class LocalFile {
    public let path: String
    private var descriptor: Int32

    private init(path: String, descriptor: Int32) {
        self.path = path
        self.descriptor = descriptor
    }

    deinit { close() }

    /// Opens `path` for reading; also returns its size (fstat(2)). A
    /// directory or other non-regular file is refused with EISDIR/EINVAL.
    public static func openForReading(_ path: String) throws(SystemError) -> (file: LocalFile, size: Int) {
        let fd = try syscallNoWait("open \(path)") { open(path, O_RDONLY | O_CLOEXEC) }
        let file = LocalFile(path: path, descriptor: fd)
        var info = stat()
        _ = try syscallNoWait("fstat \(path)") { fstat(fd, &info) }
        switch info.st_mode & S_IFMT {
        case S_IFREG: return (file, Int(info.st_size))
        case S_IFDIR: throw SystemError("open \(path)", Errno(rawValue: EISDIR))
        default: throw SystemError("open \(path): not a regular file", Errno(rawValue: EINVAL))
        }
    }

    /// Creates `path`, which must not exist yet (O_CREAT|O_EXCL|O_NOFOLLOW,
    /// mode 0644 before the umask); nil when it does exist.
    public static func createNew(_ path: String) throws(SystemError) -> LocalFile? {
        do {
            let fd = try syscallNoWait("create \(path)") {
                open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
            }
            return LocalFile(path: path, descriptor: fd)
        } catch where error.errno == Errno(rawValue: EEXIST) {
            return nil
        }
    }

    /// read(2): the byte count, 0 at end of file.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> Int {
        let fd = descriptor
        return try syscallNoWait("read \(path)") { Glibc.read(fd, buffer.baseAddress, buffer.count) }
    }

    public func writeAll(_ bytes: UnsafeRawBufferPointer) throws(SystemError) {
        var rest = bytes
        let fd = descriptor
        while !rest.isEmpty {
            let count = try syscallNoWait("write \(path)") { Glibc.write(fd, rest.baseAddress, rest.count) }
            rest = UnsafeRawBufferPointer(rebasing: rest[count...])
        }
    }

    /// fsync(2): the content is on disk before the file gets its real name.
    public func synchronize() throws(SystemError) {
        let fd = descriptor
        _ = try syscallNoWait("fsync \(path)") { fsync(fd) }
    }

    public func close() {
        guard descriptor >= 0 else { return }
        closeDescriptor(descriptor)
        descriptor = -1
    }
}

extension System {
    /// Gives the file at `existing` the name `new` as well, never replacing
    /// anything there (link(2)): false when `new` exists (EEXIST). Followed
    /// by `removeFile(existing)`, this is a rename that never overwrites.
    public static func linkIfAbsent(_ existing: String, as new: String) throws(SystemError) -> Bool {
        do {
            _ = try syscallNoWait("link \(existing) to \(new)") { link(existing, new) }
            return true
        } catch where error.errno == Errno(rawValue: EEXIST) {
            return false
        }
    }

    /// unlink(2); a missing file is not an error.
    public static func removeFile(_ path: String) {
        _ = unlink(path)
    }

    /// Whether something (a file, a directory, a dangling link) is at `path` (lstat(2)).
    public static func exists(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0
    }
}
