/// The line being typed: characters, a cursor, the lines sent before (for
/// Up/Down), and how to draw it on one terminal row. Pure state: keys in,
/// outcomes and screen text out, so every key is testable without a terminal.
///
/// The line is kept as user-perceived characters (grapheme clusters), so
/// Backspace removes `é` or a flag emoji whole, never half of one.
public struct LineEditor: Sendable {
    /// Changes while a file transfer shows its progress in front of it.
    public var prompt: String
    public private(set) var characters: [Character] = []
    /// Index into `characters`: the cursor sits before this character.
    public private(set) var cursor = 0
    private var history: [String] = []
    /// While browsing history: which entry is shown, and the line that was
    /// being typed before Up was pressed.
    private var browsing: (index: Int, draft: [Character])?
    /// The first character on screen when the line is wider than the row.
    private var firstVisible = 0

    public static let historyLimit = 500

    public init(prompt: String) {
        self.prompt = prompt
    }

    public var text: String { String(characters) }

    /// What a key did.
    public enum Outcome: Equatable, Sendable {
        /// The line or the cursor changed: draw it again.
        case changed
        /// Nothing to do (a key with no effect here).
        case unchanged
        /// Enter: the line to send; the editor is empty again.
        case submit(String)
        /// Ctrl-D on an empty line.
        case endOfInput
        case interrupt
        case suspend
        case clearScreen
    }

    public mutating func apply(_ key: Key) -> Outcome {
        switch key {
        case .text(let typed):
            insert(typed)
        case .enter:
            let line = text
            if !line.isEmpty && history.last != line {
                history.append(line)
                if history.count > Self.historyLimit { history.removeFirst() }
            }
            characters = []
            cursor = 0
            browsing = nil
            return .submit(line)
        case .backspace:
            guard cursor > 0 else { return .unchanged }
            characters.remove(at: cursor - 1)
            cursor -= 1
        case .delete:
            guard cursor < characters.count else { return .unchanged }
            characters.remove(at: cursor)
        case .controlD:
            if characters.isEmpty { return .endOfInput }
            guard cursor < characters.count else { return .unchanged }
            characters.remove(at: cursor)
        case .left:
            guard cursor > 0 else { return .unchanged }
            cursor -= 1
        case .right:
            guard cursor < characters.count else { return .unchanged }
            cursor += 1
        case .home:
            guard cursor > 0 else { return .unchanged }
            cursor = 0
        case .end:
            guard cursor < characters.count else { return .unchanged }
            cursor = characters.count
        case .wordLeft:
            let target = startOfWord(before: cursor)
            guard target != cursor else { return .unchanged }
            cursor = target
        case .wordRight:
            var target = cursor
            while target < characters.count && characters[target].isWhitespace { target += 1 }
            while target < characters.count && !characters[target].isWhitespace { target += 1 }
            guard target != cursor else { return .unchanged }
            cursor = target
        case .deleteToStart:
            guard cursor > 0 else { return .unchanged }
            characters.removeSubrange(0..<cursor)
            cursor = 0
        case .deleteToEnd:
            guard cursor < characters.count else { return .unchanged }
            characters.removeSubrange(cursor...)
        case .deleteWordBackward:
            let start = startOfWord(before: cursor)
            guard start != cursor else { return .unchanged }
            characters.removeSubrange(start..<cursor)
            cursor = start
        case .up:
            return showHistory(step: -1)
        case .down:
            return showHistory(step: 1)
        case .interrupt:
            return .interrupt
        case .suspend:
            return .suspend
        case .clearScreen:
            return .clearScreen
        }
        return .changed
    }

    /// Inserts at the cursor. A combining mark typed after a letter joins
    /// it, so the count of characters may grow by less than was typed.
    private mutating func insert(_ typed: String) {
        let before = String(characters[..<cursor]) + typed
        let after = String(characters[cursor...])
        let merged = Array(before + after)
        cursor = min(before.count, merged.count)
        characters = merged
    }

    /// Readline's unix-word-rubout boundary: back over spaces, then over
    /// everything that is not a space.
    private func startOfWord(before index: Int) -> Int {
        var start = index
        while start > 0 && characters[start - 1].isWhitespace { start -= 1 }
        while start > 0 && !characters[start - 1].isWhitespace { start -= 1 }
        return start
    }

    private mutating func showHistory(step: Int) -> Outcome {
        let current = browsing?.index ?? history.count
        let target = current + step
        guard target >= 0, target <= history.count, target != current else { return .unchanged }
        let draft = browsing?.draft ?? characters
        if target == history.count {
            characters = draft
            browsing = nil
        } else {
            characters = Array(history[target])
            browsing = (target, draft)
        }
        cursor = characters.count
        return .changed
    }

    // MARK: - Drawing

    /// The prompt and the line on the current terminal row, `width` columns
    /// wide, with the cursor put where it belongs: CR, the text, erase to end
    /// of row, CR, then forward to the cursor's column.
    ///
    /// The line never wraps (a wrapped line would need to know how many rows
    /// to clear when something is printed above it): when it is too long, it
    /// scrolls sideways, only as far as it takes to keep the cursor and the
    /// character under it in view. The last column stays empty, so the
    /// terminal never wraps on its own either.
    public mutating func render(width: Int) -> String {
        let promptColumns = Self.columns(of: prompt)
        let room = max(2, width - 1 - promptColumns)
        let widths = characters.map(Self.columns(of:))
        let cursorCell = cursor < widths.count ? max(1, widths[cursor]) : 1
        func span(_ range: Range<Int>) -> Int { widths[range].reduce(0, +) }
        firstVisible = min(firstVisible, cursor)
        while firstVisible < cursor && span(firstVisible..<cursor) + cursorCell > room { firstVisible += 1 }
        // Text hidden on the left while there is room on the right (after a
        // deletion, a resize): scroll back.
        let endCell = cursor == widths.count ? 1 : 0
        while firstVisible > 0 && span((firstVisible - 1)..<widths.count) + endCell <= room { firstVisible -= 1 }
        var end = firstVisible
        var used = 0
        while end < widths.count && used + widths[end] <= room {
            used += widths[end]
            end += 1
        }
        let column = promptColumns + span(firstVisible..<cursor)
        return "\r" + prompt + String(characters[firstVisible..<end]) + "\u{1B}[K\r"
            + (column > 0 ? "\u{1B}[\(column)C" : "")
    }

    /// The whole line as it was typed, for the record once it is sent (it may
    /// wrap: the next thing drawn starts on a fresh row).
    public func renderSubmitted(_ line: String) -> String {
        "\r" + prompt + line + "\u{1B}[K\r\n"
    }

    /// Terminal columns `text` takes (see `columns(of:)` for a character).
    public static func columns(of text: String) -> Int {
        text.reduce(0) { $0 + columns(of: $1) }
    }

    /// Terminal columns one character takes: 2 for East Asian wide and
    /// emoji-presentation characters, 0 for a lone combining mark or format
    /// character, 1 otherwise (what wcwidth(3) says for these ranges).
    public static func columns(of character: Character) -> Int {
        let scalars = character.unicodeScalars
        guard let first = scalars.first else { return 0 }
        if first.value < 0x80 { return first.value >= 0x20 && first.value != 0x7F ? 1 : 0 }
        if scalars.contains(where: { $0.value == 0xFE0F }) || first.properties.isEmojiPresentation { return 2 }
        switch first.properties.generalCategory {
        case .nonspacingMark, .enclosingMark, .format, .control: return 0
        default: break
        }
        return isWide(first.value) ? 2 : 1
    }

    private static func isWide(_ value: UInt32) -> Bool {
        switch value {
        case 0x1100...0x115F, 0x2E80...0x303E, 0x3041...0x33FF, 0x3400...0x4DBF, 0x4E00...0x9FFF,
            0xA000...0xA4CF, 0xAC00...0xD7A3, 0xF900...0xFAFF, 0xFE30...0xFE4F, 0xFF00...0xFF60,
            0xFFE0...0xFFE6, 0x1F300...0x1F64F, 0x1F900...0x1F9FF, 0x20000...0x2FFFD, 0x30000...0x3FFFD:
            true
        default:
            false
        }
    }
}
