import CEchoChatShim
import Glibc

/// An IPv4 or IPv6 socket address (a `sockaddr_storage` and its length).
public struct SocketAddress: Sendable, CustomStringConvertible {
    var storage: sockaddr_storage
    var length: socklen_t

    init(storage: sockaddr_storage, length: socklen_t) {
        self.storage = storage
        self.length = length
    }

    public var isIPv6: Bool { Int32(storage.ss_family) == AF_INET6 }

    /// The port in host byte order.
    public var port: Int {
        withUnsafeBytes(of: storage) { raw in
            if Int32(storage.ss_family) == AF_INET6 {
                return Int(UInt16(bigEndian: raw.load(as: sockaddr_in6.self).sin6_port))
            }
            return Int(UInt16(bigEndian: raw.load(as: sockaddr_in.self).sin_port))
        }
    }

    /// An IP address alone, in host byte order.
    public enum IP: Sendable, Equatable {
        /// 127.0.0.1 is `.v4(0x7F00_0001)`.
        case v4(UInt32)
        /// The first eight bytes in `high`; an IPv4-mapped address stays IPv6 here.
        case v6(high: UInt64, low: UInt64)
    }

    /// The address without the port.
    public var ip: IP {
        withUnsafeBytes(of: storage) { raw in
            if Int32(storage.ss_family) == AF_INET6 {
                return withUnsafeBytes(of: raw.load(as: sockaddr_in6.self).sin6_addr) { bytes in
                    var (high, low): (UInt64, UInt64) = (0, 0)
                    for index in 0..<8 {
                        high = high << 8 | UInt64(bytes[index])
                        low = low << 8 | UInt64(bytes[index + 8])
                    }
                    return .v6(high: high, low: low)
                }
            }
            return .v4(UInt32(bigEndian: raw.load(as: sockaddr_in.self).sin_addr.s_addr))
        }
    }

    /// The numeric host: `127.0.0.1` or `::1`.
    public var host: String {
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        withUnsafeBytes(of: storage) { raw in
            if Int32(storage.ss_family) == AF_INET6 {
                var address = raw.load(as: sockaddr_in6.self).sin6_addr
                _ = inet_ntop(AF_INET6, &address, &text, socklen_t(text.count))
            } else {
                var address = raw.load(as: sockaddr_in.self).sin_addr
                _ = inet_ntop(AF_INET, &address, &text, socklen_t(text.count))
            }
        }
        return text.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    /// `127.0.0.1:7007` or `[::1]:7007`.
    public var description: String { isIPv6 ? "[\(host)]:\(port)" : "\(host):\(port)" }

    func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        withUnsafeBytes(of: storage) { raw in
            body(raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), length)
        }
    }

    /// Resolves `host` and `port` to stream-socket addresses with getaddrinfo(3).
    /// `passive` is for binding. Numeric hosts never touch DNS;
    /// `numericOnly` refuses the others (so it never blocks).
    public static func resolve(host: String, port: Int, passive: Bool, numericOnly: Bool = false) throws(SystemError) -> [SocketAddress] {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0) | (numericOnly ? AI_NUMERICHOST : 0)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &list)
        guard status == 0, let first = list else {
            let reason = status == EAI_SYSTEM ? Errno.current.description : String(cString: gai_strerror(status))
            throw SystemError("resolve \(host)", Errno(rawValue: 0)).withDescription(reason)
        }
        defer { freeaddrinfo(first) }
        var result: [SocketAddress] = []
        var node: UnsafeMutablePointer<addrinfo>? = first
        while let current = node {
            let info = current.pointee
            if let address = info.ai_addr, info.ai_family == AF_INET || info.ai_family == AF_INET6 {
                var storage = sockaddr_storage()
                withUnsafeMutableBytes(of: &storage) { destination in
                    destination.copyMemory(from: UnsafeRawBufferPointer(start: address, count: Int(info.ai_addrlen)))
                }
                result.append(SocketAddress(storage: storage, length: info.ai_addrlen))
            }
            node = info.ai_next
        }
        return result
    }
}

extension SystemError {
    /// A resolver failure has no errno; keep its text in the operation.
    func withDescription(_ text: String) -> SystemError {
        SystemError("\(operation): \(text)", errno)
    }
}
