@testable import EchoChatLoad
import EchoChatCore
import EchoChatOptions
import EchoChatPOSIX
import EchoChatServer
import EchoChatTestSupport
import Foundation
import Testing

/// `echochat-load --mode upload`: the real binary against the real server in
/// every strategy, against a server that answers wrong, its options, and
/// the pure parts (file content, answer parsing). No assertion on speed.
@Suite("echochat-load upload", .ownThreads)
struct UploadTests {

    func runJSON(_ arguments: [String]) throws -> (status: Int32, json: [String: Any], stderr: String) {
        let result = try runProgram(EndToEndTests.binary, arguments + ["--json", "-", "--timeout", "20"], timeout: 60)
        #expect(!result.stderr.contains("Sanitizer"), "\(result.stderr)")
        let object = try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8))
        guard let json = object as? [String: Any] else {
            throw TestFailure("no JSON on stdout (status \(result.status)): \(result.stdout)\n\(result.stderr)")
        }
        return (result.status, json, result.stderr)
    }

    func int(_ json: [String: Any], _ key: String) -> Int? { (json[key] as? NSNumber)?.intValue }

    @Test(arguments: Strategy.tested)
    func uploadsAndDownloadsVerifyAgainstTheRealServer(strategy: Strategy) throws {
        let directory = try TemporaryDirectory("load-files")
        let server = try ServerProcess(["--mode", "chat", "--upload-dir", directory.path], strategy: strategy)
        let (status, json, stderr) = try runJSON(
            ["--port", String(server.port), "--mode", "upload", "-c", "2", "-m", "2", "-s", "100K"])
        #expect(status == 0, "\(stderr)")
        #expect(stderr.contains("OK: every file stored with our SHA-256 and downloaded back byte for byte"))
        #expect(json["mode"] as? String == "upload")
        #expect(int(json, "uploads") == 4 && int(json, "downloads") == 4)
        #expect(int(json, "upload_bytes") == 4 * 102_400 && int(json, "download_bytes") == 4 * 102_400)
        for key in ["hash_mismatches", "byte_mismatches", "protocol_errors", "refused", "stalls", "errors", "mismatches", "lost"] {
            #expect(int(json, key) == 0, "\(key): \(stderr)")
        }
        for key in ["upload_latency_us", "download_latency_us"] {
            let latency = try #require(json[key] as? [String: Any])
            #expect((latency["count"] as? NSNumber)?.intValue == 4, "\(key)")
        }
        #expect(json["upload_mb_per_s"] != nil && json["download_mb_per_s"] != nil)
        // The server holds exactly the four files, under this run's prefix.
        let prefix = try #require(json["name_prefix"] as? String)
        #expect(directory.names == ["\(prefix)-0-0.bin", "\(prefix)-0-1.bin", "\(prefix)-1-0.bin", "\(prefix)-1-1.bin"])
        let sizes = directory.names.map { (try? FileManager.default.attributesOfItem(atPath: directory.path + "/" + $0)[.size] as? Int) ?? -1 }
        #expect(sizes == [102_400, 102_400, 102_400, 102_400])

        // Empty files make the round trip too; a second run uses names of its own.
        let (emptyStatus, empty, emptyStderr) = try runJSON(
            ["--port", String(server.port), "--mode", "upload", "-c", "2", "-m", "2", "-s", "0"])
        #expect(emptyStatus == 0, "\(emptyStderr)")
        #expect(int(empty, "uploads") == 4 && int(empty, "downloads") == 4 && int(empty, "errors") == 0)
        #expect(empty["name_prefix"] as? String != prefix)
        #expect(directory.names.count == 8)
    }

    @Test func aTimedRunUploadsUntilTheDurationAndDownloadsEveryFile() throws {
        let directory = try TemporaryDirectory("load-files")
        let server = try ServerProcess(["--mode", "chat", "--upload-dir", directory.path])
        let (status, json, stderr) = try runJSON(["--port", String(server.port), "--mode", "upload", "-c", "2", "-d", "0.3", "-s", "10K"])
        #expect(status == 0, "\(stderr)")
        let uploads = try #require(int(json, "uploads"))
        #expect(uploads >= 2 && int(json, "downloads") == uploads)
        #expect(directory.names.count == uploads)
    }

    @Test func aRefusalFailsTheRunAndSaysWhy() throws {
        let directory = try TemporaryDirectory("load-files")
        // Room for two of the four files.
        let server = try ServerProcess(["--mode", "chat", "--upload-dir", directory.path, "--upload-quota", "2500"])
        let (status, json, stderr) = try runJSON(["--port", String(server.port), "--mode", "upload", "-c", "2", "-m", "2", "-s", "1000"])
        #expect(status == 1)
        #expect(int(json, "uploads") == 2 && int(json, "downloads") == 2)
        #expect(int(json, "refused") == 2, "\(stderr)")
        #expect(stderr.contains("! server storage full"))
        #expect(stderr.contains("FAILED"))
    }

    @Test func aWrongSHA256FailsTheRun() throws {
        let server = try FaultyFileServer(fault: .wrongHash)
        defer { server.stop() }
        let (status, json, stderr) = try runJSON(["--port", String(server.port), "--mode", "upload", "-c", "2", "-m", "2", "-s", "5000"])
        #expect(status == 1)
        // Every `* stored` and every `* sending` is wrong; every byte is right.
        #expect(int(json, "hash_mismatches") == 8, "\(stderr)")
        #expect(int(json, "byte_mismatches") == 0)
        #expect(int(json, "downloads") == 4)
        #expect(stderr.contains("is not ours"))
        #expect(json["passed"] as? Bool == false)
    }

    @Test func aCorruptDownloadFailsTheRun() throws {
        let server = try FaultyFileServer(fault: .flipDownloadByte)
        defer { server.stop() }
        let (status, json, stderr) = try runJSON(["--port", String(server.port), "--mode", "upload", "-c", "2", "-m", "2", "-s", "70000"])
        #expect(status == 1)
        #expect(int(json, "byte_mismatches") == 4, "\(stderr)")
        #expect(int(json, "hash_mismatches") == 0)
        #expect(int(json, "uploads") == 4 && int(json, "downloads") == 4)
        #expect(stderr.contains("came back with a byte that differs"))
    }

    @Test func anEchoServerIsNoChatServer() throws {
        let server = try ServerProcess(["--mode", "echo"])
        let result = try runProgram(
            EndToEndTests.binary, ["--port", String(server.port), "--mode", "upload", "-c", "1", "-m", "1", "--timeout", "1"],
            timeout: 30)
        #expect(result.status == 1)
        #expect(result.stderr.contains("no welcome line from the server"), "\(result.stderr)")
    }

    // MARK: - Options

    func options(_ arguments: [String]) throws -> LoadOptions {
        guard case .run(let options) = try LoadCommandLine.parse(arguments) else { throw UsageError("not a run") }
        return options
    }

    @Test func uploadOptions() throws {
        let defaults = try options(["--mode", "upload"])
        #expect(defaults.mode == .upload && defaults.size == 1 << 20 && defaults.connections == 10 && defaults.messages == nil)
        let given = try options(["--mode", "upload", "-s", "16M", "-c", "3", "-m", "7", "--timeout", "5"])
        #expect(given.size == 16 << 20 && given.connections == 3 && given.messages == 7 && given.timeout == 5)
        #expect(try options(["--mode", "upload", "-s", "0"]).size == 0)
        #expect(try options(["-s", "4k"]).size == 4096)
    }

    @Test(arguments: [
        (["--mode", "upload", "-p", "4"], "--pipeline does not apply to --mode upload"),
        (["--mode", "upload", "--rate", "5"], "--rate does not apply to --mode upload"),
        (["--mode", "upload", "--threads", "2"], "--threads does not apply to --mode upload"),
        (["--mode", "upload", "--hold"], "--hold works with --mode echo only"),
        (["--mode", "upload", "-c", "1001"], "at most 1000 connections"),
        (["--mode", "upload", "-s", "2T"], "invalid value '2T' for --size"),
        (["-s", "0"], "invalid value '0' for --size: expected 1 to 1048576 bytes in echo and chat mode"),
        (["-s", "2M"], "invalid value '2097152' for --size"),
        (["chaos", "--mode", "upload"], "invalid value 'upload' for --mode: expected one of echo, chat"),
    ])
    func badUploadUsageIsExplained(arguments: [String], message: String) {
        var text: String?
        do { _ = try LoadCommandLine.parse(arguments) } catch { text = error.message }
        #expect(text?.contains(message) == true, "\(arguments): \(text ?? "accepted")")
    }

    // MARK: - Pure parts

    @Test func fileContentIsTheSameStreamFromAnyOffset() {
        let content = FileContent(seed: FileContent.seed(run: 42, client: 3, index: 5))
        let whole = content.bytes(size: 1000)
        for (offset, count) in [(0, 1000), (1, 7), (3, 20), (8, 8), (13, 987), (999, 1), (500, 0)] {
            let part = [UInt8](unsafeUninitializedCapacity: max(count, 1)) { buffer, initialized in
                content.fill(buffer.baseAddress!, offset: offset, count: count)
                initialized = count
            }
            #expect(part == Array(whole[offset..<(offset + count)]), "offset \(offset) count \(count)")
        }
        // Files of a run differ from each other and from another run's.
        let seeds = Set((0..<4).flatMap { client in (0..<50).map { FileContent.seed(run: 42, client: client, index: $0) } })
        #expect(seeds.count == 200)
        #expect(FileContent.seed(run: 43, client: 0, index: 0) != FileContent.seed(run: 42, client: 0, index: 0))
        #expect(FileContent(seed: 1).bytes(size: 64) != FileContent(seed: 2).bytes(size: 64))
    }

    @Test func answersAreParsedStrictly() {
        let hex = String(repeating: "ab", count: 32)
        let stored = UploadLines.stored("* stored a-2.bin (12 bytes, sha256 \(hex))")
        #expect(stored?.name == "a-2.bin" && stored?.size == 12 && stored?.hex == hex)
        #expect(UploadLines.stored("* stored shared a.bin (12 bytes)") == nil)  // a user called "stored"
        #expect(UploadLines.stored("* stored a.bin (x bytes, sha256 \(hex))") == nil)
        let sending = UploadLines.sending("* sending a.bin 0 sha256 \(hex)")
        #expect(sending?.name == "a.bin" && sending?.size == 0 && sending?.hex == hex)
        #expect(UploadLines.sending("* sending shared a.bin (3 bytes)") == nil)
        #expect(UploadLines.sending("* sending a.bin 3 sha256 abc") == nil)
    }
}
