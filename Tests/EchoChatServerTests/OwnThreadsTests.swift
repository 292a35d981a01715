import EchoChatTestSupport
import Foundation
import Testing

/// Where the end-to-end suites' test cases run (`OwnThreads`): on threads of
/// their own, off Swift Testing's pool, unless turned off (under a sanitizer,
/// or `ECHOCHAT_TEST_THREADS=0`).
@Suite("Test cases on threads of their own", .ownThreads)
struct OwnThreadsTests {
    @Test(arguments: 0..<3)
    func aTestCaseRunsOnAThreadOfItsOwn(index: Int) {
        #expect(KeptThreads.isCurrent == (OwnThreads.width > 0), "case \(index), width \(OwnThreads.width)")
    }

    @Test func aSanitizerTurnsItOff() {
        if OwnThreads.underSanitizer && ProcessInfo.processInfo.environment["ECHOCHAT_TEST_THREADS"] == nil {
            #expect(OwnThreads.width == 0)
        } else if !OwnThreads.underSanitizer && ProcessInfo.processInfo.environment["ECHOCHAT_TEST_THREADS"] == nil {
            #expect(OwnThreads.width == 2 * max(1, ProcessInfo.processInfo.activeProcessorCount))
        }
    }
}
