// swift-tools-version:6.0
// EchoChat: a multi-client TCP echo/chat server on raw POSIX sockets.
// Zero package dependencies by design: only the toolchain's own libraries.
import PackageDescription

let package = Package(
    name: "EchoChat",
    products: [
        .executable(name: "echochat-server", targets: ["echochat-server"]),
        .executable(name: "echochat", targets: ["echochat"]),
        .executable(name: "echochat-load", targets: ["echochat-load"]),
    ],
    targets: [
        // The protocol as a pure state machine: no libc, no clock, no I/O.
        .target(name: "EchoChatCore"),
        // epoll, eventfd and accept4 are not exported by Glibc's module map.
        .target(name: "CEchoChatShim"),
        // The only module that calls libc.
        .target(name: "EchoChatPOSIX", dependencies: ["CEchoChatShim"]),
        // One option parser for the three programs: flags, help, usage errors,
        // config files and environment variables, from one table per program.
        .target(name: "EchoChatOptions"),
        // Options, logging and the concurrency strategies (plumbing around the core).
        .target(name: "EchoChatServer", dependencies: ["EchoChatCore", "EchoChatPOSIX", "EchoChatOptions"]),
        .executableTarget(name: "echochat-server", dependencies: ["EchoChatServer"]),
        // The interactive client: terminal handling, line editing, colours.
        .target(name: "EchoChatClient", dependencies: ["EchoChatCore", "EchoChatPOSIX", "EchoChatOptions"]),
        .executableTarget(name: "echochat", dependencies: ["EchoChatClient"]),
        // The load client: per-thread epoll workers, verification, histograms, reports.
        .target(name: "EchoChatLoad", dependencies: ["EchoChatPOSIX", "EchoChatOptions"]),
        .executableTarget(name: "echochat-load", dependencies: ["EchoChatLoad"]),

        .testTarget(name: "EchoChatCoreTests", dependencies: ["EchoChatCore"]),
        .testTarget(name: "EchoChatOptionsTests", dependencies: ["EchoChatOptions"]),
        // Helpers every end-to-end test target shares: start the real server,
        // talk to it with timeouts, run programs.
        .target(
            name: "EchoChatTestSupport", dependencies: ["EchoChatPOSIX", "EchoChatServer"],
            path: "Tests/EchoChatTestSupport"),
        .testTarget(
            name: "EchoChatServerTests",
            dependencies: ["EchoChatServer", "EchoChatPOSIX", "EchoChatCore", "EchoChatOptions", "EchoChatTestSupport", "echochat-server"]
        ),
        .testTarget(
            name: "EchoChatClientTests",
            dependencies: ["EchoChatClient", "EchoChatPOSIX", "EchoChatOptions", "EchoChatTestSupport", "echochat", "echochat-server"]
        ),
        .testTarget(
            name: "EchoChatLoadTests",
            dependencies: ["EchoChatLoad", "EchoChatPOSIX", "EchoChatOptions", "EchoChatTestSupport", "echochat-load", "echochat-server"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
