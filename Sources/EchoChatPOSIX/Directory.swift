import CEchoChatShim
import Glibc

/// A directory held open, and the files in it, named relative to it
/// (`openat(2)` and friends): the file store's whole view of the disk. A name
/// never leaves the directory (the store checks names, and `O_NOFOLLOW`
/// refuses a symbolic link planted in it).
public final class Directory: Sendable {
    public let descriptor: Int32
    public let path: String

    /// Opens `path`, creating it (and its parents) when `create` is set.
    public init(_ path: String, create: Bool) throws(SystemError) {
        if create { try System.makeDirectories(path) }
        descriptor = try syscallNoWait("open \(path)") { open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        self.path = path
    }

    deinit { _ = Glibc.close(descriptor) }

    /// Creates `name` (it must not exist; mode 0644) for writing.
    public func createExclusive(_ name: String) throws(SystemError) -> StoredFile {
        let fd = try syscallNoWait("create \(name)") {
            openat(descriptor, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
        }
        return StoredFile(descriptor: fd, name: name)
    }

    /// Opens the regular file `name` for reading.
    public func openForReading(_ name: String) throws(SystemError) -> StoredFile {
        // O_NONBLOCK: a FIFO planted under a valid name must not block the
        // opener until a writer comes (reads of a regular file ignore it).
        let fd = try syscallNoWait("open \(name)") { openat(descriptor, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK) }
        let file = StoredFile(descriptor: fd, name: name)
        guard try file.isRegular() else {
            file.close()
            throw SystemError("open \(name): not a regular file", Errno(rawValue: 0))
        }
        return file
    }

    /// Renames `from` to `to`, failing with EEXIST rather than replacing `to`.
    public func renameNoReplace(_ from: String, to: String) throws(SystemError) {
        _ = try syscallNoWait("rename \(from) to \(to)") { cechochat_rename_noreplace(descriptor, from, descriptor, to) }
    }

    /// Removes `name`; one already gone is not an error.
    public func remove(_ name: String) {
        _ = unlinkat(descriptor, name, 0)
    }

    /// Makes the directory's entries (a rename) durable.
    public func sync() throws(SystemError) {
        _ = try syscallNoWait("fsync \(path)") { fsync(descriptor) }
    }

    /// The directory's entries, without `.` and `..`: name, size, and
    /// whether it is a regular file (not followed if a link).
    public func entries() throws(SystemError) -> [(name: String, size: Int, regular: Bool)] {
        let copy = try syscallNoWait("dup \(path)") { fcntl(descriptor, F_DUPFD_CLOEXEC, 0) }
        guard let stream = fdopendir(copy) else {
            _ = Glibc.close(copy)
            throw SystemError("opendir \(path)", .current)
        }
        defer { closedir(stream) }
        rewinddir(stream)
        var result: [(name: String, size: Int, regular: Bool)] = []
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name == "." || name == ".." { continue }
            var info = stat()
            guard fstatat(descriptor, name, &info, AT_SYMLINK_NOFOLLOW) == 0 else { continue }
            result.append((name, Int(info.st_size), info.st_mode & S_IFMT == S_IFREG))
        }
        return result
    }
}

/// An open file of a `Directory`. Owned by one thread at a time.
public final class StoredFile: @unchecked Sendable {
    // @unchecked: handed between threads only through a queue's lock.
    public private(set) var descriptor: Int32
    public let name: String

    init(descriptor: Int32, name: String) {
        self.descriptor = descriptor
        self.name = name
    }

    deinit { close() }

    /// Writes all of `bytes` (a short write is continued; a full disk throws ENOSPC).
    public func writeAll(_ bytes: UnsafeRawBufferPointer) throws(SystemError) {
        var offset = 0
        while offset < bytes.count {
            let written = try syscallNoWait("write \(name)") {
                Glibc.write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
            }
            offset += written
        }
    }

    public func writeAll(_ bytes: [UInt8]) throws(SystemError) {
        let failure: SystemError? = bytes.withUnsafeBytes { raw in
            do throws(SystemError) { try writeAll(raw) } catch { return error }
            return nil
        }
        if let failure { throw failure }
    }

    /// Reads up to `buffer.count` bytes; 0 at the end.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> Int {
        try syscallNoWait("read \(name)") { Glibc.read(descriptor, buffer.baseAddress, buffer.count) }
    }

    /// Reads up to `buffer.count` bytes from `offset` (pread(2)); 0 at the end.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(SystemError) -> Int {
        try syscallNoWait("read \(name)") { pread(descriptor, buffer.baseAddress, buffer.count, off_t(offset)) }
    }

    /// Which file this is, as of now: inode, size and modification time. A
    /// file replaced or changed under the same name has another identity.
    public func identity() throws(SystemError) -> String {
        var info = stat()
        _ = try syscallNoWait("fstat \(name)") { fstat(descriptor, &info) }
        return "\(info.st_dev):\(info.st_ino):\(info.st_size):\(info.st_mtim.tv_sec).\(info.st_mtim.tv_nsec)"
    }

    /// Flushes the content to disk.
    public func sync() throws(SystemError) {
        _ = try syscallNoWait("fsync \(name)") { fsync(descriptor) }
    }

    public func size() throws(SystemError) -> Int {
        var info = stat()
        _ = try syscallNoWait("fstat \(name)") { fstat(descriptor, &info) }
        return Int(info.st_size)
    }

    func isRegular() throws(SystemError) -> Bool {
        var info = stat()
        _ = try syscallNoWait("fstat \(name)") { fstat(descriptor, &info) }
        return info.st_mode & S_IFMT == S_IFREG
    }

    public func close() {
        guard descriptor >= 0 else { return }
        _ = Glibc.close(descriptor)
        descriptor = -1
    }
}

extension System {
    /// `mkdir -p`: `path` and its missing parents (mode 0755).
    public static func makeDirectories(_ path: String) throws(SystemError) {
        var prefix = path.hasPrefix("/") ? "/" : ""
        for part in path.split(separator: "/") {
            prefix += part
            try makeDirectory(prefix)
            prefix += "/"
        }
    }
}
