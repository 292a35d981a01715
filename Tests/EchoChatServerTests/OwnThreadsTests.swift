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

    @Test func theWidthIsTheSettingElseOffUnderASanitizerElseTwiceTheCPUs() {
        let expected =
            if let text = ProcessInfo.processInfo.environment["ECHOCHAT_TEST_THREADS"], let width = Int(text) {
                width
            } else if OwnThreads.underSanitizer {
                0
            } else {
                2 * max(1, ProcessInfo.processInfo.activeProcessorCount)
            }
        #expect(OwnThreads.width == expected)
    }
}
