import EchoChatFuzzing

#if FUZZING
    // Built by .ci/fuzz with -sanitize=fuzzer: libFuzzer supplies main() and
    // calls this once per input. A broken invariant traps, so libFuzzer keeps
    // the input as a crash file (docs/fuzzing.md).
    @_cdecl("LLVMFuzzerTestOneInput")
    public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
        let problems = ChatFuzzer.problems(in: UnsafeRawBufferPointer(start: data, count: size))
        if !problems.isEmpty { fatalError("broken invariants:\n" + problems.joined(separator: "\n")) }
        return 0
    }
#else
    import EchoChatPOSIX

    /// Without -DFUZZING: replays files through the same harness, so a crash
    /// file from any fuzzing run can be checked with a plain build.
    @main
    enum FuzzReplay {
        static let usage = """
            USAGE: echochat-fuzz FILE|DIR ...
                   echochat-fuzz --write-seeds DIR

            Runs each file (each file in a DIR) through the chat fuzz harness and
            prints the invariants it breaks; exits 1 if any input broke one.
            --write-seeds writes the built-in seed corpus to DIR.
            Built with -DFUZZING and -sanitize=fuzzer (.ci/fuzz), it is a libFuzzer target.
            """

        static func main() {
            let arguments = Array(CommandLine.arguments.dropFirst())
            if arguments.isEmpty || arguments.contains("-h") || arguments.contains("--help") {
                print(usage)
                System.exit(arguments.isEmpty ? 64 : 0)
            }
            do throws(SystemError) {
                if arguments[0] == "--write-seeds" {
                    guard arguments.count == 2 else {
                        printError("Error: --write-seeds takes one directory\n\(usage)")
                        System.exit(64)
                    }
                    try System.makeDirectory(arguments[1])
                    for seed in FuzzSeeds.all {
                        try System.writeFile(arguments[1] + "/" + seed.name, bytes: seed.bytes)
                    }
                    print("wrote \(FuzzSeeds.all.count) seeds to \(arguments[1])")
                    System.exit(0)
                }
                var files: [String] = []
                for argument in arguments {
                    if System.isDirectory(argument) {
                        files += try System.directoryEntries(argument).map { argument + "/" + $0 }
                    } else {
                        files.append(argument)
                    }
                }
                var failed = 0
                for file in files {
                    let problems = ChatFuzzer.problems(in: try System.readFile(file))
                    if problems.isEmpty { continue }
                    failed += 1
                    print("\(file): \(problems.count) broken invariants")
                    for problem in problems { print("  " + problem) }
                }
                print("\(files.count) inputs replayed, \(failed) broke invariants")
                System.exit(failed == 0 ? 0 : 1)
            } catch {
                printError("Error: \(error)")
                System.exit(1)
            }
        }

        static func printError(_ text: String) { System.writeToStandardError(text + "\n") }
    }
#endif
