// swift-tools-version:6.0
// EchoChat: a multi-client TCP echo/chat server on raw POSIX sockets.
// Zero package dependencies by design: only the toolchain's own libraries.
import PackageDescription

// ECHOCHAT_FUZZING=1 (set by .ci/fuzz, with --sanitize=fuzzer --sanitize=address)
// builds echochat-fuzz as a libFuzzer target. SwiftPM hands each --sanitize to
// swiftc as its own -sanitize= flag and swiftc keeps only the last, in an
// order that changes between builds (half of them lacked coverage or ASan);
// a target's own flags come after them, so each target here says exactly
// what it gets: the core is what is fuzzed (coverage, compare tracing, ASan);
// the harness only checks it (ASan, no coverage: its byte loops made
// libFuzzer's compare callbacks a third of the run time).
let fuzzing = Context.environment["ECHOCHAT_FUZZING"] == "1"
func fuzzing(_ sanitizers: String, _ settings: [SwiftSetting] = []) -> [SwiftSetting] {
    fuzzing ? [.unsafeFlags(["-sanitize=\(sanitizers)"])] + settings : []
}

// ECHOCHAT_OPTIMIZED=1 (set by .ci/run for its ThreadSanitizer build) compiles the
// program modules with -O inside a debug build, keeping assert() live; the
// tests and their helpers stay -Onone. A sanitizer instruments every memory
// access, and at -Onone every local variable lives in memory: SHA-256 of
// 16 MiB took 18.7 s under ThreadSanitizer at -Onone (1.3 s without it; a
// standalone copy, both timed while a CI run used the machine), so
// the file tests were bound by the server's hashing, not by what they test.
// Optimized code is still fully instrumented. The test code stays -Onone
// because at -O a test's variables end at their last use (a server stopped
// before its clients closed) and its collectors drew reports from TSan
// through copy-on-write inside the uninstrumented runtime.
// Whole-module (-wmo), as a release build optimizes: here the build took
// 230 s instead of 255 s, and two TSan suites ran in 117 s instead of 133 s.
// -num-threads makes it emit one object per source file, as SwiftPM's debug
// build expects (without it, the build fails looking for them).
let optimized = Context.environment["ECHOCHAT_OPTIMIZED"] == "1"
func program(_ settings: [SwiftSetting] = []) -> [SwiftSetting] {
    (optimized ? [.unsafeFlags(["-O", "-wmo", "-num-threads", "2", "-assert-config", "Debug"])] : []) + settings
}

let package = Package(
    name: "EchoChat",
    products: [
        .executable(name: "echochat-server", targets: ["echochat-server"]),
        .executable(name: "echochat", targets: ["echochat"]),
        .executable(name: "echochat-load", targets: ["echochat-load"]),
    ],
    targets: [
        // The protocol as a pure state machine: no libc, no clock, no I/O.
        .target(name: "EchoChatCore", swiftSettings: program(fuzzing("fuzzer,address"))),
        // epoll, eventfd and accept4 are not exported by Glibc's module map.
        .target(name: "CEchoChatShim"),
        // The only module that calls libc.
        .target(name: "EchoChatPOSIX", dependencies: ["CEchoChatShim"], swiftSettings: program()),
        // One option parser for the three programs: flags, help, usage errors,
        // config files and environment variables, from one table per program.
        .target(name: "EchoChatOptions", swiftSettings: program()),
        // Options, logging and the concurrency strategies (plumbing around the core).
        .target(name: "EchoChatServer", dependencies: ["EchoChatCore", "EchoChatPOSIX", "EchoChatOptions"], swiftSettings: program()),
        .executableTarget(name: "echochat-server", dependencies: ["EchoChatServer"]),
        // The interactive client: terminal handling, line editing, colours.
        .target(name: "EchoChatClient", dependencies: ["EchoChatCore", "EchoChatPOSIX", "EchoChatOptions"], swiftSettings: program()),
        .executableTarget(name: "echochat", dependencies: ["EchoChatClient"]),
        // The load client: per-thread epoll workers, verification, histograms, reports.
        .target(name: "EchoChatLoad", dependencies: ["EchoChatCore", "EchoChatPOSIX", "EchoChatOptions"], swiftSettings: program()),
        .executableTarget(name: "echochat-load", dependencies: ["EchoChatLoad"]),
        // The fuzz harness: runs the core and the connection machine from a
        // script of bytes and checks invariants (docs/fuzzing.md).
        .target(name: "EchoChatFuzzing", dependencies: ["EchoChatCore"], swiftSettings: fuzzing("address")),
        // With ECHOCHAT_FUZZING=1: the libFuzzer entry point. Otherwise it
        // replays corpus and crash files through the same harness.
        .executableTarget(
            name: "echochat-fuzz", dependencies: fuzzing ? ["EchoChatFuzzing"] : ["EchoChatFuzzing", "EchoChatPOSIX"],
            swiftSettings: fuzzing("fuzzer,address", [.define("FUZZING")])),

        .testTarget(name: "EchoChatCoreTests", dependencies: ["EchoChatCore"]),
        .testTarget(name: "EchoChatOptionsTests", dependencies: ["EchoChatOptions"]),
        .testTarget(name: "EchoChatFuzzingTests", dependencies: ["EchoChatFuzzing", "EchoChatCore"]),
        // Helpers every end-to-end test target shares: start the real server,
        // talk to it with timeouts, run programs.
        .target(
            name: "EchoChatTestSupport", dependencies: ["EchoChatPOSIX", "EchoChatServer", "EchoChatCore"],
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
            dependencies: ["EchoChatLoad", "EchoChatCore", "EchoChatPOSIX", "EchoChatOptions", "EchoChatTestSupport", "echochat-load", "echochat-server"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
