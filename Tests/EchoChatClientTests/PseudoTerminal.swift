import EchoChatPOSIX
import EchoChatTestSupport
import Foundation
import Glibc

/// A pseudo-terminal opened by the test: the program under test gets the
/// slave side as its terminal; the test types into the master side and
/// reads what the program draws from it.
///
/// Glibc's module map does not export posix_openpt/grantpt/unlockpt/ptsname
/// (they need _XOPEN_SOURCE), so this is what they do on Linux: open
/// /dev/ptmx, unlock the slave (TIOCSPTLCK), ask its number (TIOCGPTN).
/// grantpt is a no-op with devpts.
final class PseudoTerminal {
    let master: Int32
    /// The slave side, kept open here too: to read its settings after the
    /// program exits (did it restore them?), and so the master does not
    /// report EIO between programs.
    let slave: Int32
    let output: OutputCollector
    let columns: Int

    // asm-generic/ioctls.h: _IOW('T', 0x31, int) and _IOR('T', 0x30, unsigned int).
    private static let setLock = UInt(0x4004_5431)
    private static let getNumber = UInt(0x8004_5430)

    init(columns: Int = 80, rows: Int = 24) throws {
        master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC)
        guard master >= 0 else { throw TestFailure("open /dev/ptmx: \(Errno.current)") }
        var unlock: Int32 = 0
        var number: UInt32 = 0
        guard ioctl(master, Self.setLock, &unlock) == 0, ioctl(master, Self.getNumber, &number) == 0 else {
            throw TestFailure("pty ioctl: \(Errno.current)")
        }
        var size = winsize(ws_row: UInt16(rows), ws_col: UInt16(columns), ws_xpixel: 0, ws_ypixel: 0)
        _ = ioctl(master, UInt(TIOCSWINSZ), &size)
        slave = open("/dev/pts/\(number)", O_RDWR | O_NOCTTY | O_CLOEXEC)
        guard slave >= 0 else { throw TestFailure("open /dev/pts/\(number): \(Errno.current)") }
        self.columns = columns
        output = try OutputCollector(descriptor: master, name: "terminal")
    }

    deinit {
        output.stop()
        close(slave)
        close(master)
    }

    /// Whether the terminal is back in the mode a shell expects.
    func isCanonicalWithEcho() throws -> Bool {
        try Terminal.isCanonicalWithEcho(slave)
    }

    /// What a terminal of this width shows after everything drawn so far.
    var screen: ScreenModel { ScreenModel(columns: columns, feeding: output.data) }

    /// Waits until the screen satisfies `predicate`.
    @discardableResult
    func waitForScreen(_ what: String, timeout: Double = 10, _ predicate: (ScreenModel) -> Bool) throws -> ScreenModel {
        let columns = columns
        do {
            return ScreenModel(
                columns: columns,
                feeding: try output.waitFor(what, timeout: timeout) { predicate(ScreenModel(columns: columns, feeding: $0)) })
        } catch {
            throw TestFailure("\(error)\nscreen:\n\(screen.rows.joined(separator: "\n"))")
        }
    }
}

/// The little of a VT100 the client uses, enough to know what a user sees:
/// printable text (one column each; the tests type ASCII), CR, LF, erase to
/// end of line (ESC [ K), cursor forward/back (ESC [ n C/D), home and clear
/// (ESC [ H, ESC [ 2 J); colours (ESC [ … m) are noted and otherwise ignored.
/// Rows are never scrolled away, so the whole transcript stays inspectable.
struct ScreenModel {
    private(set) var grid: [[Character]] = [[]]
    private(set) var row = 0
    private(set) var column = 0
    private(set) var sawColor = false
    let columns: Int

    init(columns: Int, feeding bytes: [UInt8]) {
        self.columns = columns
        feed(String(decoding: bytes, as: UTF8.self))
    }

    /// The rows, trailing spaces removed.
    var rows: [String] {
        grid.map { String($0).replacing(#/ +$/#, with: "") }
    }

    /// The rows with something on them, in order.
    var nonEmptyRows: [String] { rows.filter { !$0.isEmpty } }

    /// The row the cursor is on.
    var cursorRow: String { rows[row] }

    private mutating func feed(_ text: String) {
        var iterator = text.makeIterator()
        while let character = iterator.next() {
            switch character {
            case "\r": column = 0
            case "\n", "\r\n":
                if character == "\r\n" { column = 0 }
                row += 1
                if row == grid.count { grid.append([]) }
            case "\u{1B}":
                guard iterator.next() == "[" else { continue }
                var parameters = ""
                var final: Character = " "
                while let next = iterator.next() {
                    if next.isLetter || next == "~" {
                        final = next
                        break
                    }
                    parameters.append(next)
                }
                let count = Int(parameters) ?? 1
                switch final {
                case "C": column = min(columns - 1, column + count)
                case "D": column = max(0, column - count)
                case "K": if column < grid[row].count { grid[row].removeSubrange(column...) }
                case "H": row = 0; column = 0
                case "J": grid = Array(repeating: [], count: grid.count)
                case "m": sawColor = true
                default: break
                }
            default:
                if column >= columns {
                    row += 1
                    column = 0
                    if row == grid.count { grid.append([]) }
                }
                while grid[row].count < column { grid[row].append(" ") }
                if column < grid[row].count { grid[row][column] = character } else { grid[row].append(character) }
                column += 1
            }
        }
    }
}
