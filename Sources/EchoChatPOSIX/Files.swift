import Glibc

// Whole files: the load client's reports and /proc facts, the server's
// configuration file.

extension System {
    /// The whole file at `path`.
    public static func readFile(_ path: String) throws(SystemError) -> [UInt8] {
        let fd = try syscallNoWait("open \(path)") { open(path, O_RDONLY | O_CLOEXEC) }
        defer { _ = Glibc.close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = try syscallNoWait("read \(path)") {
                chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            }
            if count == 0 { return bytes }
            bytes.append(contentsOf: chunk[0..<count])
        }
    }

    /// Writes `text` to a new (or truncated) file.
    public static func writeFile(_ path: String, _ text: String) throws(SystemError) {
        var text = text
        let failure: SystemError? = text.withUTF8 { bytes in
            do throws(SystemError) {
                try writeFile(path, bytes: UnsafeRawBufferPointer(bytes))
            } catch { return error }
            return nil
        }
        if let failure { throw failure }
    }

    /// Writes `bytes` to a new (or truncated) file.
    public static func writeFile(_ path: String, bytes: [UInt8]) throws(SystemError) {
        let failure: SystemError? = bytes.withUnsafeBytes { bytes in
            do throws(SystemError) {
                try writeFile(path, bytes: bytes)
            } catch { return error }
            return nil
        }
        if let failure { throw failure }
    }

    private static func writeFile(_ path: String, bytes: UnsafeRawBufferPointer) throws(SystemError) {
        let fd = try syscallNoWait("open \(path)") { open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) }
        defer { _ = Glibc.close(fd) }
        try writeUntilDone(
            bytes,
            writeSome: { rest throws(SystemError) in
                try syscall("write \(path)", { Glibc.write(fd, rest.baseAddress, rest.count) })
            },
            whenBlocked: { () throws(SystemError) in throw SystemError("write \(path)", .wouldBlock) })
    }

    /// Whether `path` is a directory (stat(2)).
    public static func isDirectory(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && info.st_mode & S_IFMT == S_IFDIR
    }

    /// The names in directory `path`, without `.` and `..`, sorted
    /// (opendir(3), readdir(3)); `/proc/PID/fd` lists a process's open descriptors.
    public static func directoryEntries(_ path: String) throws(SystemError) -> [String] {
        guard let directory = opendir(path) else { throw SystemError("opendir \(path)", .current) }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// Whether a file exists and is executable by us (access(2)).
    public static func isExecutable(_ path: String) -> Bool { access(path, X_OK) == 0 }

    /// rmdir(2): removes an empty directory.
    public static func removeDirectory(_ path: String) throws(SystemError) {
        if rmdir(path) != 0 { throw SystemError("rmdir \(path)", .current) }
    }

    /// mkdir(2) for one directory; an existing directory is fine.
    public static func makeDirectory(_ path: String) throws(SystemError) {
        if mkdir(path, 0o755) != 0 && Errno.current != Errno(rawValue: EEXIST) {
            throw SystemError("mkdir \(path)", .current)
        }
    }
}
