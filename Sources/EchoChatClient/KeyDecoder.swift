/// A key press (or a run of typed or pasted characters), as the line editor
/// sees it.
public enum Key: Equatable, Sendable {
    /// Printable characters, in order (a paste arrives as one run).
    case text(String)
    case enter
    case backspace
    case delete
    case left, right, home, end
    case wordLeft, wordRight
    case up, down
    /// Ctrl-U: delete from the start of the line to the cursor.
    case deleteToStart
    /// Ctrl-K: delete from the cursor to the end of the line.
    case deleteToEnd
    /// Ctrl-W, Alt-Backspace: delete the word before the cursor.
    case deleteWordBackward
    /// Ctrl-D: end of input on an empty line, else delete forward.
    case controlD
    /// Ctrl-C.
    case interrupt
    /// Ctrl-Z.
    case suspend
    /// Ctrl-L.
    case clearScreen
}

/// Turns the bytes a terminal in raw mode sends into keys: UTF-8 sequences
/// and escape sequences may arrive split across reads, so the decoder keeps
/// what it has not finished between calls. Invalid UTF-8, C1 controls and
/// sequences it does not know are dropped, so nothing that could move the
/// cursor or change the terminal ever reaches the line.
public struct KeyDecoder: Sendable {
    private enum State: Sendable {
        case ground
        /// After ESC.
        case escape
        /// After ESC [: parameter and intermediate bytes so far.
        case controlSequence([UInt8])
        /// After ESC O (application cursor keys).
        case singleShift
    }

    private var state = State.ground
    /// The bytes of an unfinished UTF-8 sequence, and how many it needs.
    private var pending: [UInt8] = []
    private var needed = 0
    /// A CR was the last key: an LF right after it is the same Enter
    /// (a paste of CR LF text), not a second, empty line.
    private var afterCarriageReturn = false

    public init() {}

    public mutating func decode(_ bytes: some Sequence<UInt8>) -> [Key] {
        var keys: [Key] = []
        for byte in bytes { decode(byte, into: &keys) }
        flushText(into: &keys)
        return keys
    }

    /// Characters typed one after another become one `.text` (a paste of
    /// 64 KiB is one insertion, not 65,536).
    private var text = ""

    private mutating func flushText(into keys: inout [Key]) {
        if !text.isEmpty {
            keys.append(.text(text))
            text = ""
        }
    }

    private mutating func decode(_ byte: UInt8, into keys: inout [Key]) {
        func emit(_ key: Key) {
            flushText(into: &keys)
            keys.append(key)
        }
        let wasAfterCarriageReturn = afterCarriageReturn
        afterCarriageReturn = false
        switch state {
        case .ground:
            break
        case .escape:
            state = .ground
            switch byte {
            case UInt8(ascii: "["): state = .controlSequence([])
            case UInt8(ascii: "O"): state = .singleShift
            case 0x7F, 0x08: emit(.deleteWordBackward)
            case UInt8(ascii: "b"): emit(.wordLeft)
            case UInt8(ascii: "f"): emit(.wordRight)
            case 0x1B: state = .escape
            default:
                // A lone Escape followed by a key: the key counts on its own.
                decode(byte, into: &keys)
            }
            return
        case .controlSequence(var collected):
            switch byte {
            case 0x20...0x3F:
                // A sequence too long to be a key is still read to its end,
                // so its tail does not turn into typed text.
                if collected.count < 16 { collected.append(byte) }
                state = .controlSequence(collected)
            case 0x40...0x7E:
                state = .ground
                if let key = Self.controlSequenceKey(parameters: collected, final: byte) { emit(key) }
            default:
                // Not a valid sequence: drop it, and let the byte count on its own.
                state = .ground
                decode(byte, into: &keys)
            }
            return
        case .singleShift:
            state = .ground
            if let key = Self.cursorKey(byte) { emit(key) }
            return
        }

        if needed > 0 {
            if byte & 0xC0 == 0x80 {
                pending.append(byte)
                if pending.count == needed {
                    let decoded = String(decoding: pending, as: UTF8.self)
                    pending = []
                    needed = 0
                    // Overlong forms and surrogates decode to U+FFFD: dropped,
                    // as are C1 controls.
                    if let scalar = decoded.unicodeScalars.first, decoded.unicodeScalars.count == 1,
                        scalar != "\u{FFFD}", !(0x80...0x9F).contains(scalar.value)
                    {
                        text.unicodeScalars.append(scalar)
                    }
                }
                return
            }
            // The sequence was cut short: drop it, and start again at this byte.
            pending = []
            needed = 0
        }

        switch byte {
        case 0x20...0x7E:
            text.unicodeScalars.append(Unicode.Scalar(byte))
        case 0xC2...0xDF, 0xE0...0xEF, 0xF0...0xF4:
            pending = [byte]
            needed = byte >= 0xF0 ? 4 : byte >= 0xE0 ? 3 : 2
        case 0x0D:
            afterCarriageReturn = true
            emit(.enter)
        case 0x0A:
            if !wasAfterCarriageReturn { emit(.enter) }
        case 0x09:
            // No completion to offer; a tab is a space, so a pasted tab does
            // not vanish.
            text.append(" ")
        case 0x7F, 0x08: emit(.backspace)
        case 0x1B: state = .escape
        case 0x01: emit(.home)
        case 0x02: emit(.left)
        case 0x03: emit(.interrupt)
        case 0x04: emit(.controlD)
        case 0x05: emit(.end)
        case 0x06: emit(.right)
        case 0x0B: emit(.deleteToEnd)
        case 0x0C: emit(.clearScreen)
        case 0x0E: emit(.down)
        case 0x10: emit(.up)
        case 0x15: emit(.deleteToStart)
        case 0x17: emit(.deleteWordBackward)
        case 0x1A: emit(.suspend)
        default: break  // other controls, stray continuation bytes, invalid lead bytes
        }
    }

    /// ESC [ … final: arrows (with a modifier for word moves), Home, End, Delete.
    private static func controlSequenceKey(parameters: [UInt8], final: UInt8) -> Key? {
        let fields = parameters.split(separator: UInt8(ascii: ";"), omittingEmptySubsequences: false)
            .map { Int(String(decoding: $0, as: UTF8.self)) }
        let first = fields.first.flatMap { $0 }
        // xterm: ESC [ 1 ; m C, where m - 1 is a bit set of Shift 1, Alt 2, Ctrl 4.
        let modified = fields.count >= 2 && (fields[1] ?? 1) > 1
        switch final {
        case UInt8(ascii: "C"): return modified ? .wordRight : .right
        case UInt8(ascii: "D"): return modified ? .wordLeft : .left
        case UInt8(ascii: "~"):
            switch first {
            case 1, 7: return .home
            case 4, 8: return .end
            case 3: return .delete
            default: return nil
            }
        default:
            return fields.count <= 1 || !modified ? cursorKey(final) : nil
        }
    }

    /// The final byte of a cursor key, after ESC [ or ESC O.
    private static func cursorKey(_ byte: UInt8) -> Key? {
        switch byte {
        case UInt8(ascii: "A"): .up
        case UInt8(ascii: "B"): .down
        case UInt8(ascii: "C"): .right
        case UInt8(ascii: "D"): .left
        case UInt8(ascii: "H"): .home
        case UInt8(ascii: "F"): .end
        default: nil
        }
    }
}
