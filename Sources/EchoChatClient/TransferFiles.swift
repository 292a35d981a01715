import EchoChatCore
import EchoChatPOSIX

/// A file being uploaded: read in pieces as the socket takes them (never
/// whole into memory), hashed as read, so the hash covers exactly what was
/// sent.
final class UploadSource {
    static let chunk = 64 * 1024

    let name: String
    let size: Int
    private(set) var sent = 0
    private var hasher = SHA256()
    private let file: LocalFile
    private var buffer = [UInt8](repeating: 0, count: UploadSource.chunk)

    /// Opens `path`; `name` is what the server is asked to store it as.
    init(path: String, name: String) throws(TransferError) {
        guard FileNames.isValid(name) else {
            throw TransferError("cannot upload as '\(name)': a name is \(FileNames.rule) (choose one with --as)")
        }
        do {
            (file, size) = try LocalFile.openForReading(path)
        } catch {
            throw TransferError("cannot read \(path): \(error.errno)")
        }
        self.name = name
    }

    /// `/upload NAME SIZE` and its LF.
    var command: [UInt8] { Array("/upload \(name) \(size)\n".utf8) }

    var isDone: Bool { sent == size }

    /// The SHA-256 of everything read so far (all of the file once `isDone`).
    var sha256: String { SHA256.hex(hasher.finalize()) }

    /// Appends the next piece of the file to `queue`. Exactly `size` bytes
    /// must go, or the server would read our next line as content: a file
    /// that shrank while being sent is an error.
    func fill(_ queue: inout ByteQueue) throws(TransferError) {
        guard !isDone else { return }
        let want = min(Self.chunk, size - sent)
        let file = file
        let count: Int
        do {
            count = try buffer.withUnsafeMutableBytes { raw in
                Result { () throws(SystemError) in try file.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[..<want])) }
            }.get()
        } catch {
            throw TransferError("cannot read \(file.path): \(error.errno)")
        }
        guard count > 0 else { throw TransferError("\(file.path) shrank while being sent (\(sent) of \(size) bytes)") }
        buffer.withUnsafeBytes { raw in
            let piece = UnsafeRawBufferPointer(rebasing: raw[..<count])
            hasher.update(piece)
            queue.append(piece)
        }
        sent += count
        if isDone { file.close() }
    }
}

/// A file being downloaded: written to a hidden temporary name in the
/// download directory, hashed as written, and given its real name (the first
/// free of NAME, NAME-2, ...) only once the hash matched. Anything else
/// removes it.
final class DownloadSink {
    let name: String
    let size: Int
    let expected: String
    let directory: String
    private(set) var received = 0
    private var hasher = SHA256()
    private let file: LocalFile

    init(directory: String, name: String, size: Int, sha256: String) throws(TransferError) {
        (self.directory, self.name, self.size, expected) = (directory, name, size, sha256)
        var attempt = 0
        while true {
            attempt += 1
            let path = "\(directory)/.\(name).echochat-\(System.processID)-\(attempt).part"
            do {
                if let created = try LocalFile.createNew(path) {
                    file = created
                    return
                }
            } catch {
                throw TransferError("cannot save \(name) in \(directory): \(error.errno)")
            }
        }
    }

    var temporaryPath: String { file.path }

    func write(_ bytes: UnsafeRawBufferPointer) throws(TransferError) {
        hasher.update(bytes)
        received += bytes.count
        do {
            try file.writeAll(bytes)
        } catch {
            abort()
            throw TransferError("cannot write \(file.path): \(error.errno)")
        }
    }

    /// Verifies and names the file; returns its path.
    func finish() throws(TransferError) -> String {
        let actual = SHA256.hex(hasher.finalize())
        guard actual == expected else {
            abort()
            throw TransferError("sha256 mismatch for \(name): the server announced \(expected), received \(actual); file deleted")
        }
        do {
            try file.synchronize()
            file.close()
            var final = ""
            _ = try FileNames.firstFree(name) { (candidate: String) throws(SystemError) -> Bool in
                final = "\(directory)/\(candidate)"
                return try !System.linkIfAbsent(file.path, as: final)
            }
            System.removeFile(file.path)
            return final
        } catch let error as SystemError {
            abort()
            throw TransferError("cannot save \(name) in \(directory): \(error.errno)")
        } catch {
            abort()
            throw TransferError("cannot save \(name) in \(directory): \(error)")
        }
    }

    /// Removes the partial file (a failed or interrupted download).
    func abort() {
        file.close()
        System.removeFile(file.path)
    }
}

/// Why a transfer failed, in words for the user.
struct TransferError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
