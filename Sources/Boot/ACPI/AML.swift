import VMMCore
/// A small encoder for the ACPI Machine Language terms a VMM's DSDT needs (ACPI 6.x, chapter 20):
/// scopes, devices, names, integers, strings, buffers, packages and resource templates.
public indirect enum AML: Sendable, Equatable {
    case scope(String, [AML])
    case device(String, [AML])
    case name(String, AML)
    case integer(UInt64)
    case string(String)
    case buffer([UInt8])
    case package([AML])
    /// A ResourceTemplate: the descriptors, then the end tag.
    case resources([ResourceDescriptor])

    public enum ResourceDescriptor: Sendable, Equatable {
        /// Memory32Fixed(ReadWrite, base, length).
        case memory32Fixed(base: UInt32, length: UInt32, writable: Bool)
        /// Interrupt(ResourceConsumer, Level, ActiveHigh, Exclusive) {gsi} (extended interrupt).
        case interrupt(UInt32, levelTriggered: Bool, activeLow: Bool)
        /// IO(Decode16, base, base, 1, length).
        case io(base: UInt16, length: UInt8)

        var bytes: [UInt8] {
            switch self {
            case .memory32Fixed(let base, let length, let writable):
                return [0x86, 0x09, 0x00, writable ? 1 : 0] + le(UInt64(base), 4) + le(UInt64(length), 4)
            case .interrupt(let gsi, let level, let low):
                let flags: UInt8 = 0x01 | (level ? 0 : 0x02) | (low ? 0x04 : 0)
                return [0x89, 0x06, 0x00, flags, 0x01] + le(UInt64(gsi), 4)
            case .io(let base, let length):
                return [0x47, 0x01] + le(UInt64(base), 2) + le(UInt64(base), 2) + [0x01, length]
            }
        }
    }

    /// The encoded term.
    public var bytes: [UInt8] {
        switch self {
        case .scope(let path, let terms):
            return [0x10] + AML.withPackageLength(AML.nameString(path) + terms.flatMap(\.bytes))
        case .device(let name, let terms):
            return [0x5B, 0x82] + AML.withPackageLength(AML.nameString(name) + terms.flatMap(\.bytes))
        case .name(let name, let value):
            return [0x08] + AML.nameString(name) + value.bytes
        case .integer(let value):
            switch value {
            case 0: return [0x00]
            case 1: return [0x01]
            case ...0xFF: return [0x0A, UInt8(value)]
            case ...0xFFFF: return [0x0B] + le(value, 2)
            case ...0xFFFF_FFFF: return [0x0C] + le(value, 4)
            default: return [0x0E] + le(value, 8)
            }
        case .string(let text):
            return [0x0D] + Array(text.utf8) + [0x00]
        case .buffer(let contents):
            return [0x11] + AML.withPackageLength(AML.integer(UInt64(contents.count)).bytes + contents)
        case .package(let elements):
            return [0x12] + AML.withPackageLength([UInt8(elements.count)] + elements.flatMap(\.bytes))
        case .resources(let descriptors):
            // End tag 0x79 with checksum 0 ("treat as valid").
            return AML.buffer(descriptors.flatMap(\.bytes) + [0x79, 0x00]).bytes
        }
    }

    /// PkgLength (20.2.4) followed by `body`: the length counts itself.
    static func withPackageLength(_ body: [UInt8]) -> [UInt8] {
        let count = body.count
        if count + 1 < 0x40 { return [UInt8(count + 1)] + body }
        for extra in 1...3 {
            let total = count + 1 + extra
            guard total < 1 << (4 + 8 * extra) else { continue }
            var encoded = [UInt8(extra << 6) | UInt8(total & 0xF)]
            for index in 0..<extra { encoded.append(UInt8(truncatingIfNeeded: total >> (4 + 8 * index))) }
            return encoded + body
        }
        preconditionFailure("AML package of \(count) bytes exceeds PkgLength's 28 bits")
    }

    /// A NameString: optional root prefix, then 4-character segments ("_SB_" style, padded with '_').
    static func nameString(_ path: String) -> [UInt8] {
        var bytes: [UInt8] = []
        var rest = Substring(path)
        if rest.hasPrefix("\\") { bytes.append(0x5C); rest = rest.dropFirst() }
        let segments = rest.split(separator: ".").map { segment -> [UInt8] in
            let padded = Array(segment.utf8.prefix(4))
            return padded + [UInt8](repeating: UInt8(ascii: "_"), count: 4 - padded.count)
        }
        switch segments.count {
        case 0: bytes.append(0x00)
        case 1: bytes += segments[0]
        case 2: bytes += [0x2E] + segments[0] + segments[1]
        default: bytes += [0x2F, UInt8(segments.count)] + segments.flatMap { $0 }
        }
        return bytes
    }
}

/// `value` as `width` little-endian bytes.
func le(_ value: UInt64, _ width: Int) -> [UInt8] { LittleEndian.bytes(value, size: width) }
