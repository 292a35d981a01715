/// File sharing's rules, as pure data (docs/PROTOCOL.md §5): which names are
/// valid, which stored name an upload gets, what `/files` lists, how much of
/// the quota is used or promised to uploads under way. The server's store
/// does the disk work; the core decides with this.
public struct FileSharing: Sendable, Equatable {
    /// The largest upload accepted (`max-upload`).
    public var maxUpload: Int
    /// The total of all stored files, and of uploads under way (`upload-quota`).
    public var quota: Int

    public static let defaultMaxUpload = 16 << 20
    public static let defaultQuota = 1 << 30

    public init(maxUpload: Int = FileSharing.defaultMaxUpload, quota: Int = FileSharing.defaultQuota) {
        self.maxUpload = maxUpload
        self.quota = quota
    }
}

public enum FileName {
    public static let maxLength = 100

    /// 1-100 bytes of `A-Z a-z 0-9 . _ -`, not starting with `.`: never a
    /// path, never hidden, never a temporary file of the store.
    public static func isValid(_ name: some Collection<UInt8>) -> Bool {
        guard (1...maxLength).contains(name.count), name.first != 0x2E else { return false }
        return name.allSatisfy { byte in
            (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x30 && byte <= 0x39)
                || byte == 0x2E || byte == 0x5F || byte == 0x2D
        }
    }

    public static func isValid(_ name: String) -> Bool { isValid(name.utf8) }

    /// The `number`th name for `name` when it is taken: `notes.txt` ->
    /// `notes-2.txt`; `README` -> `README-2`; `a.tar.gz` -> `a.tar-2.gz`
    /// (the number goes before the last `.`). nil when the result would not
    /// be a valid name (too long).
    public static func numbered(_ name: String, _ number: Int) -> String? {
        let bytes = Array(name.utf8)
        let dot = bytes.lastIndex(of: 0x2E).flatMap { $0 > 0 ? $0 : nil } ?? bytes.count
        let result = Array(bytes[..<dot]) + Array("-\(number)".utf8) + Array(bytes[dot...])
        return isValid(result) ? String(decoding: result, as: UTF8.self) : nil
    }
}

/// The stored files and the quota. Owned by the core (behind its lock).
public struct FileCatalog: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public var name: String
        public var size: Int
        public init(name: String, size: Int) {
            self.name = name
            self.size = size
        }
    }

    /// Name -> size. Names are exact (case matters, as on disk).
    public private(set) var sizes: [String: Int] = [:]
    /// The total of stored files.
    public private(set) var storedBytes = 0
    /// Promised to uploads under way.
    public private(set) var reservedBytes = 0

    public init(_ entries: [Entry] = []) {
        for entry in entries where FileName.isValid(entry.name) && sizes[entry.name] == nil {
            sizes[entry.name] = entry.size
            storedBytes += entry.size
        }
    }

    public var count: Int { sizes.count }

    public func size(of name: String) -> Int? { sizes[name] }

    /// Sorted like every list: by the byte order of the lower-cased name, then the name.
    public var sorted: [Entry] {
        sizes.map { (key: Array($0.key.asciiLowercased.utf8), entry: Entry(name: $0.key, size: $0.value)) }
            .sorted { a, b in
                a.key == b.key ? a.entry.name.utf8.lexicographicallyPrecedes(b.entry.name.utf8) : a.key.lexicographicallyPrecedes(b.key)
            }
            .map(\.entry)
    }

    /// Promises `size` bytes to an upload if the quota has room for them.
    public mutating func reserve(_ size: Int, quota: Int) -> Bool {
        guard size <= quota - storedBytes - reservedBytes else { return false }
        reservedBytes += size
        return true
    }

    /// An upload under way ended without storing.
    public mutating func release(_ size: Int) {
        reservedBytes = max(0, reservedBytes - size)
    }

    /// A finished upload of `size` (reserved) takes the first free name among
    /// `requested`, `requested-2`, ... that is not in `avoiding` (names found
    /// taken on disk); nil if none is left.
    public mutating func claim(_ requested: String, size: Int, avoiding: Set<String> = []) -> String? {
        var number = 1
        while true {
            guard let name = number == 1 ? requested : FileName.numbered(requested, number) else { return nil }
            if sizes[name] == nil && !avoiding.contains(name) {
                sizes[name] = size
                storedBytes += size
                release(size)
                return name
            }
            number += 1
            if number > 100_000 { return nil }
        }
    }

    /// A file found in the directory that the catalog does not list (stored
    /// there by another server sharing it, or by hand): listed from now on,
    /// unless the name is listed already (stored or claimed here). Returns
    /// whether it is listed now and was not before.
    @discardableResult
    public mutating func found(_ name: String, size: Int) -> Bool {
        guard FileName.isValid(name), size >= 0, sizes[name] == nil else { return false }
        sizes[name] = size
        storedBytes += size
        return true
    }

    /// A listed file that is no longer in the directory (deleted by hand):
    /// unlisted, and its bytes no longer count against the quota. Returns
    /// whether it was listed.
    @discardableResult
    public mutating func forget(_ name: String) -> Bool {
        guard let size = sizes.removeValue(forKey: name) else { return false }
        storedBytes -= size
        return true
    }

    /// The directory holds exactly `present` (its listable files): listed
    /// names not among them are forgotten. Returns how many.
    @discardableResult
    public mutating func keep(only present: Set<String>) -> Int {
        let gone = sizes.keys.filter { !present.contains($0) }
        for name in gone { forget(name) }
        return gone.count
    }

    /// A claimed name whose file could not be put in place after all: the
    /// name is free again and the bytes are promised again (the caller then
    /// claims another name or releases them).
    public mutating func unclaim(_ name: String) {
        guard let size = sizes.removeValue(forKey: name) else { return }
        storedBytes -= size
        reservedBytes += size
    }
}
