import EchoChatCore
import EchoChatPOSIX
import EchoChatTestSupport
import Foundation

/// A tiny chat server that shares files (PROTOCOL §5) and gets one thing
/// wrong on purpose, to prove that `echochat-load --mode upload` notices:
/// it reports a wrong SHA-256 for every upload (and download), or sends
/// every download back with one byte flipped. Everything else it does
/// right: a welcome, `* stored` with the stored name after the last byte,
/// `* sending NAME SIZE sha256 HEX` and the content.
final class FaultyFileServer: Sendable {
    enum Fault: Sendable { case wrongHash, flipDownloadByte }

    private let server: ThreadedTestServer
    var port: Int { server.port }

    init(fault: Fault) throws {
        // Name -> content; shared by every connection.
        let files = Lock<[String: [UInt8]]>([:])
        server = try ThreadedTestServer(name: "faulty-files") { client, number in
            Self.serve(client, nick: "guest\(number)", fault: fault, files: files)
        }
    }

    /// Stops accepting and joins every connection's thread (each ends when
    /// its client has gone, or after its 20 s receive timeout).
    func stop() { server.stop() }

    private static func serve(_ client: Socket, nick: String, fault: Fault, files: Lock<[String: [UInt8]]>) {
        defer { client.close() }
        try? client.setReceiveTimeout(seconds: 20)
        try? client.setSendTimeout(seconds: 20)
        var pending: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        /// Reads more into `pending`; false at the end of the connection.
        func fill() -> Bool {
            let result = buffer.withUnsafeMutableBytes { try? client.read(into: $0) }
            guard case .bytes(let count) = result else { return false }
            pending += buffer[0..<count]
            return true
        }
        func line() -> String? {
            while true {
                if let newline = pending.firstIndex(of: 0x0A) {
                    let text = String(decoding: pending[..<newline], as: UTF8.self)
                    pending.removeFirst(newline + 1)
                    return text
                }
                guard fill() else { return nil }
            }
        }
        func say(_ text: String) -> Bool { (try? client.writeAll(Array((text + "\n").utf8))) != nil }
        let zeros = String(repeating: "0", count: 64)

        guard say("* welcome \(nick), you are in #lobby (1 here); /help lists commands") else { return }
        while let command = line() {
            let words = command.split(separator: " ").map(String.init)
            if words.count == 3, words[0] == "/upload", let size = Int(words[2]) {
                while pending.count < size {
                    guard fill() else { return }
                }
                let content = Array(pending[0..<size])
                pending.removeFirst(size)
                let name = files.withLock { table in
                    var name = words[1]
                    var number = 2
                    while table[name] != nil {
                        name = words[1] + "-\(number)"
                        number += 1
                    }
                    table[name] = content
                    return name
                }
                let hex = fault == .wrongHash ? zeros : SHA256.hex(SHA256.hash(content))
                guard say("* stored \(name) (\(size) bytes, sha256 \(hex))") else { return }
            } else if words.count == 2, words[0] == "/download" {
                guard var content = files.withLock({ $0[words[1]] }) else {
                    guard say("! no such file: \(words[1])") else { return }
                    continue
                }
                let hex = fault == .wrongHash ? zeros : SHA256.hex(SHA256.hash(content))
                if fault == .flipDownloadByte && !content.isEmpty { content[content.count / 2] ^= 0x01 }
                guard say("* sending \(words[1]) \(content.count) sha256 \(hex)") else { return }
                guard (try? client.writeAll(content)) != nil else { return }
            } else {
                guard say("! unknown command") else { return }
            }
        }
    }
}
