import EchoChatLoad
import EchoChatPOSIX

// Everything lives in the library: threads created from top-level code in
// main.swift trap at run time on this toolchain (SWIFT-ON-LINUX.md).
System.exit(LoadMain.run(Array(CommandLine.arguments.dropFirst())))
