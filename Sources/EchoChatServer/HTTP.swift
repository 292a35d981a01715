/// The little of HTTP/1.1 (RFC 9112) the metrics endpoint needs: reading a
/// request's head with bounds, and writing a whole response with
/// `Connection: close`. Pure: bytes in, a decision or bytes out; the socket
/// work is `MetricsServer`'s.
public enum HTTP {
    public struct Status: Sendable, Equatable, CustomStringConvertible {
        public let code: Int
        public let reason: String

        public static let ok = Status(code: 200, reason: "OK")
        public static let badRequest = Status(code: 400, reason: "Bad Request")
        public static let notFound = Status(code: 404, reason: "Not Found")
        public static let methodNotAllowed = Status(code: 405, reason: "Method Not Allowed")
        public static let requestTimeout = Status(code: 408, reason: "Request Timeout")
        public static let fieldsTooLarge = Status(code: 431, reason: "Request Header Fields Too Large")
        public static let versionNotSupported = Status(code: 505, reason: "HTTP Version Not Supported")

        public var description: String { "\(code) \(reason)" }
    }

    /// A request line and its header fields.
    public struct Head: Sendable, Equatable {
        public var method: String
        public var target: String
        /// `HTTP/1.1` or `HTTP/1.0`.
        public var version: String
        public var fields: [Field]

        /// The target's path: without query or fragment, and without the
        /// scheme and authority of an absolute-form target.
        public var path: String {
            var rest = Substring(target)
            for scheme in ["http://", "https://"] where rest.lowercased().hasPrefix(scheme) {
                rest = rest.dropFirst(scheme.count)
                rest = rest.firstIndex(of: "/").map { rest[$0...] } ?? "/"
            }
            return String(rest.prefix { $0 != "?" && $0 != "#" })
        }

        /// The value of the first field named `name` (ignoring case).
        public func field(_ name: String) -> String? {
            fields.first { $0.name.lowercased() == name.lowercased() }?.value
        }
    }

    public struct Field: Sendable, Equatable {
        public var name: String
        public var value: String
        public init(_ name: String, _ value: String) {
            self.name = name
            self.value = value
        }
    }

    /// Reads a request head from bytes as they arrive, in pieces of any size.
    /// The head (request line, fields, blank line) may take `maxHeadBytes` at
    /// most and hold `maxFields` fields at most; past that the answer is 431.
    /// Whatever follows the head (a body) is ignored: the connection closes
    /// after one response.
    public struct RequestReader: Sendable {
        public static let maxHeadBytes = 8192
        public static let maxFields = 64

        public enum Outcome: Sendable, Equatable {
            case needMore
            case head(Head)
            case failed(Status)
        }

        private var buffer: [UInt8] = []
        /// Where the search for the blank line resumes.
        private var scanned = 0
        private var done: Outcome?

        public init() {}

        /// Takes the next bytes; the outcome stays once it is not `needMore`.
        public mutating func read(_ bytes: some Collection<UInt8>) -> Outcome {
            if let done { return done }
            // RFC 9112 §2.2: blank lines before the request line are ignored.
            var bytes = bytes[...]
            if buffer.isEmpty { bytes = bytes.drop { $0 == 0x0D || $0 == 0x0A } }
            let room = Self.maxHeadBytes - buffer.count
            buffer.append(contentsOf: bytes.prefix(room + 1))
            guard let end = headEnd() else {
                if buffer.count > Self.maxHeadBytes { return finish(.failed(.fieldsTooLarge)) }
                return .needMore
            }
            guard end <= Self.maxHeadBytes else { return finish(.failed(.fieldsTooLarge)) }
            return finish(Self.parse(buffer[..<end]))
        }

        private mutating func finish(_ outcome: Outcome) -> Outcome {
            done = outcome
            buffer = []
            return outcome
        }

        /// The index just past the blank line (LF LF or LF CR LF), if it came.
        private mutating func headEnd() -> Int? {
            var index = scanned
            while index < buffer.count {
                if buffer[index] == 0x0A {
                    if index + 1 < buffer.count && buffer[index + 1] == 0x0A { return index + 2 }
                    if index + 2 < buffer.count && buffer[index + 1] == 0x0D && buffer[index + 2] == 0x0A { return index + 3 }
                    if index + 2 >= buffer.count { break }  // the rest may be the blank line's start
                }
                index += 1
            }
            scanned = index
            return nil
        }

        static func parse(_ head: ArraySlice<UInt8>) -> Outcome {
            var lines: [ArraySlice<UInt8>] = head.split(separator: 0x0A, omittingEmptySubsequences: false).map {
                $0.last == 0x0D ? $0.dropLast() : $0
            }
            while lines.last?.isEmpty == true { lines.removeLast() }
            guard let requestLine = lines.first, !lines.contains(where: { $0.contains(0x0D) }) else {
                return .failed(.badRequest)
            }
            let parts = requestLine.split(separator: 0x20, omittingEmptySubsequences: false)
            guard parts.count == 3, !parts[0].isEmpty, parts[0].allSatisfy(isTokenByte),
                !parts[1].isEmpty, parts[1].allSatisfy({ (0x21...0x7E).contains($0) })
            else { return .failed(.badRequest) }
            let version = String(decoding: parts[2], as: UTF8.self)
            guard isVersion(version) else { return .failed(.badRequest) }
            guard version == "HTTP/1.1" || version == "HTTP/1.0" else { return .failed(.versionNotSupported) }
            let target = String(decoding: parts[1], as: UTF8.self)
            guard target.hasPrefix("/") || target == "*" || target.lowercased().hasPrefix("http://")
                || target.lowercased().hasPrefix("https://")
            else { return .failed(.badRequest) }

            let fieldLines = lines.dropFirst()
            guard fieldLines.count <= maxFields else { return .failed(.fieldsTooLarge) }
            var fields: [Field] = []
            for line in fieldLines {
                // No obsolete line folding, no blank before the colon (RFC 9112 §5).
                guard let colon = line.firstIndex(of: 0x3A), colon > line.startIndex,
                    line[..<colon].allSatisfy(isTokenByte)
                else { return .failed(.badRequest) }
                let value = line[(colon + 1)...].drop { $0 == 0x20 || $0 == 0x09 }
                guard value.allSatisfy({ $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }) else { return .failed(.badRequest) }
                var trimmed = value
                while let last = trimmed.last, last == 0x20 || last == 0x09 { trimmed = trimmed.dropLast() }
                fields.append(Field(String(decoding: line[..<colon], as: UTF8.self), String(decoding: trimmed, as: UTF8.self)))
            }
            let head = Head(method: String(decoding: parts[0], as: UTF8.self), target: target, version: version, fields: fields)
            // RFC 9112 §3.2: an HTTP/1.1 request has exactly one Host field.
            if version == "HTTP/1.1" && fields.filter({ $0.name.lowercased() == "host" }).count != 1 {
                return .failed(.badRequest)
            }
            return .head(head)
        }

        /// RFC 9110 `tchar`.
        static func isTokenByte(_ byte: UInt8) -> Bool {
            switch byte {
            case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: true
            case _ where Array("!#$%&'*+-.^_`|~".utf8).contains(byte): true
            default: false
            }
        }

        /// `HTTP/` digit `.` digit.
        static func isVersion(_ text: String) -> Bool {
            let bytes = Array(text.utf8)
            return bytes.count == 8 && text.hasPrefix("HTTP/") && (0x30...0x39).contains(bytes[5]) && bytes[6] == 0x2E
                && (0x30...0x39).contains(bytes[7])
        }
    }

    /// A whole response: status line, `Content-Type`, `Content-Length`,
    /// `Connection: close`, any `fields`, then the body unless `headOnly`
    /// (an answer to HEAD).
    public static func response(
        _ status: Status, contentType: String = "text/plain; charset=utf-8", body: String, headOnly: Bool = false,
        fields: [Field] = []
    ) -> [UInt8] {
        let bodyBytes = Array(body.utf8)
        var text = "HTTP/1.1 \(status)\r\nContent-Type: \(contentType)\r\nContent-Length: \(bodyBytes.count)\r\n"
        for field in fields { text += "\(field.name): \(field.value)\r\n" }
        text += "Connection: close\r\n\r\n"
        return Array(text.utf8) + (headOnly ? [] : bodyBytes)
    }

    /// A short plain-text answer for an error status: `404 Not Found`.
    public static func errorResponse(_ status: Status, fields: [Field] = []) -> [UInt8] {
        response(status, body: "\(status)\n", fields: fields)
    }
}
