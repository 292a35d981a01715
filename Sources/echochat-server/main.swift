import EchoChatServer
import EchoChatPOSIX

// Everything lives in the library: threads created from top-level code in
// main.swift trap at run time on this toolchain (Swift 6.3 on Linux).
System.exit(ServerMain.run(Array(CommandLine.arguments.dropFirst())))
