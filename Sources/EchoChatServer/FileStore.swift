import EchoChatCore
import EchoChatPOSIX
import Synchronization

/// The disk side of file sharing (docs/PROTOCOL.md §5), for every strategy.
///
/// The core decides (names, quota, who hears what); a connection's machine
/// frames the raw bytes; this store does the disk work, all of it on its own
/// I/O thread, so no thread that serves sockets ever waits for the disk: a
/// connection hands it jobs (`uploadData`, `downloadRead`, …) and gets the
/// outcome back as `FileEvent`s in its mail, woken the strategy's way
/// (`ConnectionLayer.wake`). One thread runs every job in order, so one
/// upload's writes, flush and rename never race.
///
/// Storage safety: names are checked by the core (`FileName`); files are
/// created under the upload directory only (`openat` on its descriptor) with
/// `O_CREAT|O_EXCL|O_NOFOLLOW` and mode 0644; content goes to a hidden
/// `.upload-…` file, is flushed (`fsync`), renamed without replacing
/// (`renameat2(RENAME_NOREPLACE)`), and the directory is flushed. Partial
/// files go when an upload fails or its connection ends, and any a crash left
/// are removed at start: those of a process of this machine that no longer
/// runs (a partial file's name says which host and process wrote it), so
/// servers may share one directory (docs/cluster.md).
public final class FileStore: Sendable {
    public let directory: Directory
    public let sharing: FileSharing
    /// What was in the directory at start.
    public let catalog: FileCatalog
    /// Partial files of an earlier run removed at start.
    public let removedPartials: Int
    private let logger: Logger
    private let jobs = WorkQueue<Job>()
    private let links = Lock(Links())
    private let thread = Lock<ThreadHandle?>(nil)
    private let lookForAllQueued = Atomic<Bool>(false)

    static let partialPrefix = ".upload-"
    /// This machine's name, in the names of the partial files it writes.
    private static let host = System.hostName.filter { $0 != "/" }

    /// `.upload-HOST-PID-N`: this process's `n`th partial file.
    static func partialName(_ n: Int) -> String { "\(partialPrefix)\(host)-\(System.processID)-\(n)" }

    /// Whether the partial file `name` was left by a process that no longer
    /// runs: one of this machine's (or of an older server, whose names had no
    /// host) that does not exist, or that is this very process (a pid reused
    /// since). Another machine's are left alone: their uploads may be under way.
    static func isAbandoned(_ name: String) -> Bool {
        let fields = name.dropFirst(partialPrefix.count).split(separator: "-", omittingEmptySubsequences: false)
        guard name.hasPrefix(partialPrefix), fields.count >= 2, Int(fields[fields.count - 1]) != nil,
            let writer = Int32(fields[fields.count - 2])
        else { return true }  // not one of ours as we name them: a crash's leftover
        let writerHost = fields.dropLast(2).joined(separator: "-")
        guard writerHost.isEmpty || writerHost == host else { return false }
        return writer == System.processID || !System.processExists(writer)
    }

    /// A directory entry that `/files` lists: a regular file with a valid
    /// name (which a partial file's, starting with a dot, is not).
    private static func listable(_ entry: (name: String, size: Int, regular: Bool)) -> FileCatalog.Entry? {
        entry.regular && FileName.isValid(entry.name) ? FileCatalog.Entry(name: entry.name, size: entry.size) : nil
    }

    private struct Links {
        var hub: ChatHub?
        var wake: (@Sendable (Connection) -> Void)?
    }

    enum Job: Sendable {
        case uploadBegin(Connection, name: String, size: Int)
        case uploadData(Connection, [UInt8])
        case uploadEnd(Connection)
        case uploadAbort(Connection)
        case downloadBegin(Connection, name: String)
        case downloadRead(Connection, max: Int)
        case downloadEnd(Connection)
        /// Another server stored `name`: if this directory has it too
        /// (shared), with `size` bytes (any size when nil), list it.
        case look(String, size: Int?)
        /// List every file in the directory that is not listed yet.
        case lookForAll
        case stop
    }

    /// Opens (creating if needed) the upload directory, checks that files
    /// can be created in it, removes partial files left by a crash and reads
    /// what is stored. Throws a message fit for a start-up error.
    public init(path: String, sharing: FileSharing, logger: Logger) throws(SystemError) {
        do {
            directory = try Directory(path, create: true)
        } catch {
            throw SystemError("cannot use the upload directory \(path): \(error)", Errno(rawValue: 0))
        }
        // Writable: create and remove a probe.
        let probe = Self.partialName(0)
        directory.remove(probe)
        do {
            let file = try directory.createExclusive(probe)
            file.close()
            directory.remove(probe)
        } catch {
            throw SystemError("the upload directory \(path) is not writable: \(error.errno)", Errno(rawValue: 0))
        }
        var entries: [FileCatalog.Entry] = []
        var removed = 0
        for entry in try directory.entries() {
            if entry.name.hasPrefix(Self.partialPrefix) {
                guard Self.isAbandoned(entry.name) else { continue }
                directory.remove(entry.name)
                removed += 1
            } else if let file = Self.listable(entry) {
                entries.append(file)
            }
        }
        self.sharing = sharing
        self.catalog = FileCatalog(entries)
        self.removedPartials = removed
        self.logger = logger
    }

    /// Connects the store to the chat engine and the strategy's way of
    /// waking a connection's owner.
    func attach(hub: ChatHub, wake: @escaping @Sendable (Connection) -> Void) {
        links.withLock {
            $0.hub = hub
            $0.wake = wake
        }
    }

    /// Starts the I/O thread (after the daemon forked: threads do not survive fork).
    public func start() throws(SystemError) {
        let handle = try Threads.spawn(name: "echochat-files") { [self] in run() }
        thread.withLock { $0 = handle }
    }

    /// Runs the jobs already queued (the aborts of the connections just
    /// closed remove their partial files), then stops the I/O thread.
    public func stop() {
        guard let handle = thread.withLock({ state -> ThreadHandle? in
            defer { state = nil }
            return state
        }) else { return }
        jobs.push(.stop)
        handle.join()
    }

    func submit(_ job: Job) { jobs.push(job) }

    /// Lists, on the I/O thread, every file in the directory that `/files`
    /// does not list yet: stored by a server sharing the directory while
    /// this one was not told (a cluster link down), or put there by hand
    /// (SIGHUP); and unlists the listed ones that are gone (deleted by
    /// hand). Asks that come while one is queued add nothing.
    public func lookForFiles() {
        if !lookForAllQueued.exchange(true, ordering: .acquiringAndReleasing) { jobs.push(.lookForAll) }
    }

    // MARK: - The I/O thread

    private struct Upload {
        let file: StoredFile
        let temporary: String
        let requested: String
        let size: Int
        var written = 0
        var hasher = SHA256()
    }

    private struct Download {
        let file: StoredFile
        var offset = 0
    }

    private func run() {
        var state = Worker()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Limits.downloadChunk, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let job = jobs.pop()
            switch job {
            case .stop:
                for upload in state.uploads.values { discard(upload) }
                return
            case .uploadBegin(let connection, let name, let size):
                begin(connection, name: name, size: size, &state)
            case .uploadData(let connection, let bytes):
                write(bytes, for: connection, &state)
            case .uploadEnd(let connection):
                finish(connection, &state)
            case .uploadAbort(let connection):
                if let upload = state.uploads.removeValue(forKey: ObjectIdentifier(connection)) { discard(upload) }
            case .downloadBegin(let connection, let name):
                open(name, for: connection, &state)
            case .downloadRead(let connection, let max):
                read(max, for: connection, buffer: buffer, &state)
            case .downloadEnd(let connection):
                state.downloads.removeValue(forKey: ObjectIdentifier(connection))?.file.close()
            case .look(let name, let size):
                look(name, size: size)
            case .lookForAll:
                lookForAllQueued.store(false, ordering: .releasing)  // an ask from now on looks again
                lookForAll()
            }
        }
    }

    /// Owned by the I/O thread.
    private struct Worker {
        var uploads: [ObjectIdentifier: Upload] = [:]
        var downloads: [ObjectIdentifier: Download] = [:]
        /// SHA-256 of stored files, by name and identity (inode, size, mtime),
        /// so a file is hashed once, not on every download.
        var hashes: [String: String] = [:]
        var serial = 0
    }

    private func begin(_ connection: Connection, name: String, size: Int, _ state: inout Worker) {
        state.serial += 1
        let temporary = Self.partialName(state.serial)
        do {
            let file = try directory.createExclusive(temporary)
            state.uploads[ObjectIdentifier(connection)] = Upload(file: file, temporary: temporary, requested: name, size: size)
        } catch {
            fail(connection, size: size, error)
        }
    }

    private func write(_ bytes: [UInt8], for connection: Connection, _ state: inout Worker) {
        let key = ObjectIdentifier(connection)
        guard var upload = state.uploads[key] else { return }  // failed earlier: dropped
        do {
            try upload.file.writeAll(bytes)
        } catch {
            state.uploads[key] = nil
            discard(upload)
            return fail(connection, size: upload.size, error)
        }
        bytes.withUnsafeBytes { upload.hasher.update($0) }
        upload.written += bytes.count
        state.uploads[key] = upload
        post(.uploadWritten(bytes.count), to: connection)
    }

    /// All the content is in: flush it, take a name, put it in place, flush
    /// the directory, announce. A client gone by then gets nothing stored.
    private func finish(_ connection: Connection, _ state: inout Worker) {
        guard let upload = state.uploads.removeValue(forKey: ObjectIdentifier(connection)) else { return }
        do {
            try upload.file.sync()
            upload.file.close()
        } catch {
            discard(upload)
            return fail(connection, size: upload.size, error)
        }
        guard let hub = links.withLock({ $0.hub }) else { return discard(upload) }
        let digest = SHA256.hex(upload.hasher.finalize())
        var taken: Set<String> = []
        while true {
            guard let name = hub.claimUpload(connection, requested: upload.requested, size: upload.size, avoiding: taken) else {
                // Gone (or no name left): nothing stays behind.
                discard(upload)
                return post(.uploadEnded, to: connection)
            }
            do {
                try directory.renameNoReplace(upload.temporary, to: name)
            } catch {
                hub.unclaimUpload(connection, name: name)
                if error.errno == .exists {
                    taken.insert(name)  // put there by someone else: the next number,
                    look(name, size: nil)  // and the file there is listed
                    continue
                }
                discard(upload)
                return fail(connection, size: upload.size, error)
            }
            do {
                try directory.sync()
            } catch {
                // The file is in place and its content flushed; only the
                // rename might not survive a crash. Say so in the log.
                logger.warn("fsync of \(directory.path) failed after storing \(name): \(error)", limitedAs: "files-dir-sync")
            }
            state.hashes[name] = digest  // checked against the identity on download
            logger.info("stored \(name) (\(upload.size) bytes, sha256 \(digest))")
            wake(hub.uploadStored(connection, name: name, size: upload.size, sha256: digest))
            return post(.uploadEnded, to: connection)
        }
    }

    private func open(_ name: String, for connection: Connection, _ state: inout Worker) {
        do {
            let file = try directory.openForReading(name)
            let size = try file.size()
            let identity = try file.identity()
            var digest = state.hashes[name + "\u{0}" + identity]
            if digest == nil {
                digest = try hash(file)
                state.hashes[name + "\u{0}" + identity] = digest
            }
            state.downloads[ObjectIdentifier(connection)] = Download(file: file)
            post(.downloadOpened(size: size, sha256: digest!), to: connection)
        } catch {
            if error.errno == .noSuchEntry, links.withLock({ $0.hub })?.fileMissing(name) == true {
                logger.info("files: unlisted \(name), gone from the upload directory")
            } else {
                logger.info("download of \(name) failed: \(error)", limitedAs: "files-download")
            }
            post(.downloadFailed, to: connection)
        }
    }

    /// Lists `name` if it is a file in the directory (of `size` bytes, when
    /// given): one that another server sharing the directory stored.
    private func look(_ name: String, size expected: Int?) {
        guard FileName.isValid(name), let hub = links.withLock({ $0.hub }), let file = try? directory.openForReading(name) else { return }
        defer { file.close() }
        guard let size = try? file.size(), expected == nil || size == expected else { return }
        _ = hub.filesFound([FileCatalog.Entry(name: name, size: size)])
    }

    private func lookForAll() {
        guard let hub = links.withLock({ $0.hub }) else { return }
        do {
            let (listed, unlisted) = hub.directoryListed(try directory.entries().compactMap(Self.listable))
            if listed > 0 { logger.info("files: listed \(listed) found in the upload directory") }
            if unlisted > 0 { logger.info("files: unlisted \(unlisted) gone from the upload directory") }
        } catch {
            logger.warn("cannot look for files in the upload directory: \(error)", limitedAs: "files-look")
        }
    }

    private func hash(_ file: StoredFile) throws(SystemError) -> String {
        var hasher = SHA256()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buffer.deallocate() }
        var offset = 0
        while true {
            let count = try file.read(into: buffer, at: offset)
            if count == 0 { break }
            hasher.update(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
            offset += count
        }
        return SHA256.hex(hasher.finalize())
    }

    private func read(_ max: Int, for connection: Connection, buffer: UnsafeMutableRawBufferPointer, _ state: inout Worker) {
        let key = ObjectIdentifier(connection)
        guard var download = state.downloads[key] else { return }
        do {
            let count = try download.file.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<min(max, buffer.count)]), at: download.offset)
            guard count > 0 else { throw SystemError("read \(download.file.name): the file is shorter than announced", Errno(rawValue: 0)) }
            download.offset += count
            state.downloads[key] = download
            post(.downloadData(Array(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))), to: connection)
        } catch {
            logger.warn("download of \(download.file.name) failed: \(error)", limitedAs: "files-download")
            state.downloads[key] = nil
            post(.downloadFailed, to: connection)
        }
    }

    private func discard(_ upload: Upload) {
        upload.file.close()
        directory.remove(upload.temporary)
    }

    /// A disk error ends the upload: the client hears `! upload failed: REASON`.
    private func fail(_ connection: Connection, size: Int, _ error: SystemError) {
        let reason = error.errno.rawValue == 0 ? error.operation : error.errno.description
        logger.warn("upload failed: \(error)", limitedAs: "files-upload")
        if let hub = links.withLock({ $0.hub }) { wake(hub.uploadFailed(connection, size: size, reason: reason)) }
        post(.uploadEnded, to: connection)
    }

    /// Queues `event` in the connection's mail and wakes its owner.
    private func post(_ event: FileEvent, to connection: Connection) {
        let wake = connection.shared.withLock { state -> Bool in
            guard !state.closed else { return false }
            state.files.append(event)
            defer { state.mailWaiting = true }
            return !state.mailWaiting
        }
        if wake { links.withLock({ $0.wake })?(connection) }
    }

    private func wake(_ deliveries: Deliveries) {
        guard let wake = links.withLock({ $0.wake }) else { return }
        for connection in deliveries.woken { wake(connection) }
    }
}
