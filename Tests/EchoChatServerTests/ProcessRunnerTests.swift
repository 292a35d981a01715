import EchoChatPOSIX
import EchoChatTestSupport
import Foundation
import Testing

/// The test helpers' process runner itself: failures are thrown errors that
/// show the program's output, never a crash or a hang, and nothing a test
/// starts outlives it. The programs are /bin/sh and coreutils, which every
/// Debian system has.
@Suite("Process runner", .ownThreads)
struct ProcessRunnerTests {
    @Test func aProgramThatCannotStartIsAThrownError() throws {
        let error = try #require(throws: TestFailure.self) {
            _ = try TestProcess("/nonexistent/echochat-test-program", [])
        }
        #expect(error.description.contains("No such file or directory"), "\(error)")
    }

    @Test func writingToAProgramThatExitedThrowsWithItsStderr() throws {
        let child = try TestProcess("/bin/sh", ["-c", "echo going away >&2; exit 3"])
        #expect(try child.waitForExit(timeout: 10) == 3)
        let error = try #require(throws: TestFailure.self) { try child.write("anyone there?\n") }
        #expect(error.description.contains("going away"), "\(error)")
        #expect(error.description.contains("Broken pipe"), "\(error)")
    }

    @Test func aProgramThatDoesNotExitIsKilledAtItsDeadline() throws {
        let child = try TestProcess("/bin/sh", ["-c", "echo started; exec sleep 60"])
        try child.stdout?.waitFor(text: "started\n")
        let error = try #require(throws: TestFailure.self) { try child.waitForExit(timeout: 0.5) }
        #expect(error.description.contains("did not exit within 0.5 s"), "\(error)")
        #expect(error.description.contains("started"), "the output is in the failure: \(error)")
        #expect(child.killedBySignal == SIGKILL)
    }

    /// "Exited" means "and all of its output is collected": no line can
    /// still be on its way when waitForExit returns.
    @Test func afterExitEveryLineIsCollected() throws {
        let child = try TestProcess(
            "/bin/sh", ["-c", "i=0; while [ $i -lt 3000 ]; do echo line $i; echo err $i >&2; i=$((i+1)); done"])
        #expect(try child.waitForExit(timeout: 30) == 0)
        #expect(child.stdout?.lines.count == 3000)
        #expect(child.stdout?.lines.last == "line 2999")
        #expect(child.stderr?.lines.last == "err 2999")
    }

    /// A program that fills both output pipes before it reads any input
    /// cannot deadlock the runner that is feeding it.
    @Test func aChattyProgramCannotDeadlockTheRunner() throws {
        let input = [UInt8](repeating: 0x61, count: 1 << 20)
        let result = try runProgram(
            "/bin/sh", ["-c", "head -c 1048576 /dev/zero; head -c 1048576 /dev/zero >&2; wc -c"], bytes: input,
            timeout: 60)
        #expect(result.status == 0)
        #expect(result.stdout.count == (1 << 20) + "1048576\n".count)
        #expect(result.stderr.utf8.count == 1 << 20)
    }

    /// What a program leaves running in its process group (here a `sleep`
    /// holding its stdout) is killed when it exits, so its output ends.
    @Test func leftoversInTheProcessGroupAreKilledAtExit() throws {
        let started = Date()
        let child = try TestProcess("/bin/sh", ["-c", "sleep 60 & echo started"])
        #expect(try child.waitForExit(timeout: 20) == 0)
        #expect(child.stdout?.text == "started\n")
        #expect(Date().timeIntervalSince(started) < 20)
    }

    /// A process that escapes the group and session (as a daemon does) is
    /// adopted by the guardian and killed when the guardian is released.
    @Test func theGuardianKillsWhatEscapedWhenReleased() throws {
        let pidFile = FileManager.default.temporaryDirectory.appendingPathComponent("echochat-runner-\(UUID()).pid").path
        defer { try? FileManager.default.removeItem(atPath: pidFile) }
        let launcher = try GuardedProgram(
            "/bin/sh", ["-c", "setsid sleep 60 </dev/null >/dev/null 2>&1 & echo $! > '\(pidFile)'; echo launched"])
        let result = try launcher.waitForExit(timeout: 20)
        #expect(result.status == 0 && result.stdout == "launched\n", "\(result)")
        let escaped = try launcher.adopt(pidFile: pidFile)
        #expect(escaped.isAlive)
        launcher.release()
        #expect(escaped.waitUntilGone(timeout: 10))
    }
}
