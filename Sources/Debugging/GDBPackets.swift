import VMMCore
/// The framing of gdb's remote serial protocol: `$payload#cs` with a modulo-256 checksum, `}`
/// escapes, `+`/`-` acknowledgements and the lone 0x03 byte that asks a running target to stop.
public enum GDBPacket {
    /// `$payload#cs`, escaping the bytes the protocol reserves (`$`, `#`, `}`, `*`).
    public static func frame(_ payload: [UInt8]) -> [UInt8] {
        var body: [UInt8] = []
        body.reserveCapacity(payload.count + 4)
        for byte in payload {
            if byte == UInt8(ascii: "$") || byte == UInt8(ascii: "#") || byte == UInt8(ascii: "}") || byte == UInt8(ascii: "*") {
                body.append(UInt8(ascii: "}"))
                body.append(byte ^ 0x20)
            } else {
                body.append(byte)
            }
        }
        let sum = body.reduce(UInt8(0)) { $0 &+ $1 }
        return [UInt8(ascii: "$")] + body + [UInt8(ascii: "#")] + Array(hexByte(sum).utf8)
    }

    public static func frame(_ payload: String) -> [UInt8] { frame(Array(payload.utf8)) }
}

/// What arrives from gdb, one item at a time.
public enum GDBInput: Equatable, Sendable {
    /// A packet whose checksum matched, unescaped.
    case packet([UInt8])
    /// A packet whose checksum did not match: answer `-` so gdb resends.
    case corrupt
    /// The interrupt byte (0x03): stop the target.
    case interrupt
    case ack
    case nack
}

/// Incremental parser: feed it what the socket gave, take the inputs it completed.
public struct GDBPacketReader: Sendable {
    private enum State { case idle, payload, checksumHigh, checksumLow(UInt8) }
    private var state = State.idle
    private var raw: [UInt8] = []
    /// A packet larger than this is dropped as corrupt, so a peer cannot grow memory without bound.
    public static let maxPacket = 0x10000

    public init() {}

    public mutating func feed(_ bytes: some Sequence<UInt8>) -> [GDBInput] {
        var inputs: [GDBInput] = []
        for byte in bytes {
            switch state {
            case .idle:
                switch byte {
                case UInt8(ascii: "$"): raw.removeAll(keepingCapacity: true); state = .payload
                case 0x03: inputs.append(.interrupt)
                case UInt8(ascii: "+"): inputs.append(.ack)
                case UInt8(ascii: "-"): inputs.append(.nack)
                default: break // noise between packets is ignored, as gdb stubs do
                }
            case .payload:
                if byte == UInt8(ascii: "#") {
                    state = .checksumHigh
                } else if raw.count >= Self.maxPacket {
                    state = .idle
                    inputs.append(.corrupt)
                } else {
                    raw.append(byte)
                }
            case .checksumHigh:
                guard let high = hexDigit(byte) else { state = .idle; inputs.append(.corrupt); continue }
                state = .checksumLow(high)
            case .checksumLow(let high):
                state = .idle
                guard let low = hexDigit(byte), high << 4 | low == raw.reduce(UInt8(0), { $0 &+ $1 }) else {
                    inputs.append(.corrupt)
                    continue
                }
                inputs.append(.packet(Self.unescape(raw)))
            }
        }
        return inputs
    }

    static func unescape(_ raw: [UInt8]) -> [UInt8] {
        var result: [UInt8] = []
        result.reserveCapacity(raw.count)
        var escaped = false
        for byte in raw {
            if escaped {
                result.append(byte ^ 0x20)
                escaped = false
            } else if byte == UInt8(ascii: "}") {
                escaped = true
            } else {
                result.append(byte)
            }
        }
        return result
    }
}

// MARK: hex helpers shared by the protocol code

func hexDigit(_ byte: UInt8) -> UInt8? {
    switch byte {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
    default: return nil
    }
}

public func hexByte(_ byte: UInt8) -> String {
    let digits = Array("0123456789abcdef")
    return String([digits[Int(byte >> 4)], digits[Int(byte & 0xF)]])
}

/// Bytes as lowercase hex pairs.
public func hexEncode(_ bytes: some Sequence<UInt8>) -> String {
    bytes.map(hexByte).joined()
}

/// Hex pairs to bytes; nil when the text is not an even run of hex digits.
public func hexDecode(_ text: some StringProtocol) -> [UInt8]? {
    let utf8 = Array(text.utf8)
    guard utf8.count % 2 == 0 else { return nil }
    var bytes: [UInt8] = []
    bytes.reserveCapacity(utf8.count / 2)
    var index = 0
    while index < utf8.count {
        guard let high = hexDigit(utf8[index]), let low = hexDigit(utf8[index + 1]) else { return nil }
        bytes.append(high << 4 | low)
        index += 2
    }
    return bytes
}

/// A big-endian hex number as gdb writes addresses and lengths.
func hexNumber(_ text: some StringProtocol) -> UInt64? {
    guard !text.isEmpty, text.count <= 16 else { return nil }
    return UInt64(text, radix: 16)
}
