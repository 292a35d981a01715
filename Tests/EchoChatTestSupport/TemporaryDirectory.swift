import EchoChatPOSIX
import Foundation

/// A fresh directory under the system's temporary one, removed with its
/// content when released.
public final class TemporaryDirectory {
    public let path: String

    public init(_ role: String = "files") throws {
        path = NSTemporaryDirectory() + "echochat-\(role)-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// The names in it, sorted.
    public var names: [String] { ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted() }

    /// A file's bytes, nil if it cannot be read. (Not `FileManager.contents`:
    /// LeakSanitizer reports what Foundation's file reading leaves behind.)
    public func contents(_ name: String) -> [UInt8]? { try? System.readFile(path + "/" + name) }

    /// Writes `bytes` to `name` in it; returns the file's path.
    @discardableResult
    public func write(_ name: String, _ bytes: [UInt8]) throws -> String {
        let file = path + "/" + name
        try System.writeFile(file, bytes: bytes)
        return file
    }
}
