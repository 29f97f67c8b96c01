import VMMCore
/// The named code and data symbols of an ELF64 file (.symtab, or .dynsym when stripped), for
/// debuggers: `break main`, and addresses shown as `name+offset`.
public struct SymbolTable: Sendable, Equatable {
    public struct Symbol: Sendable, Equatable {
        public let name: String
        public let address: UInt64
        public let size: UInt64
    }

    /// Sorted by address.
    public let symbols: [Symbol]
    private let byName: [String: Symbol]

    public init(_ symbols: [Symbol]) {
        self.symbols = symbols.sorted { ($0.address, $0.name) < ($1.address, $1.name) }
        // The first definition of a name wins (local symbols of the same name are rare in kernels).
        self.byName = symbols.reduce(into: [:]) { table, symbol in
            if table[symbol.name] == nil { table[symbol.name] = symbol }
        }
    }

    public static let empty = SymbolTable([])

    public subscript(name: String) -> Symbol? { byName[name] }

    /// "name" or "name+0x1c" for the symbol containing `address` (or the nearest one below it
    /// when sizes are unknown), nil when none is near.
    public func describe(_ address: UInt64) -> String? {
        var low = 0, high = symbols.count
        while low < high {
            let middle = (low + high) / 2
            if symbols[middle].address <= address { low = middle + 1 } else { high = middle }
        }
        guard low > 0 else { return nil }
        let symbol = symbols[low - 1]
        let offset = address - symbol.address
        guard symbol.size == 0 ? offset < 0x1000 : offset < symbol.size else { return nil }
        return offset == 0 ? symbol.name : "\(symbol.name)+0x\(String(offset, radix: 16))"
    }

    /// Reads the symbol table of an ELF64 or ELF32 little-endian file. Files without one (or that
    /// are not ELF) give an empty table; a table that points outside the file is a LoaderError.
    public static func parse(_ bytes: [UInt8]) throws(LoaderError) -> SymbolTable {
        guard ELF64.isELF(bytes), bytes.count >= 52, bytes[5] == 1, bytes[4] == 1 || bytes[4] == 2 else { return .empty }
        let is64 = bytes[4] == 2
        guard bytes.count >= (is64 ? ELF64.headerSize : 52) else { return .empty }
        let reader = LittleEndianReader(bytes)
        func word(_ offset: Int) -> UInt64 { is64 ? reader.u64(offset) : UInt64(reader.u32(offset)) }
        // Header and section-header field offsets per class.
        let shoff = word(is64 ? 40 : 32)
        let shentsize = Int(reader.u16(is64 ? 58 : 46)), shnum = Int(reader.u16(is64 ? 60 : 48))
        let minimumEntry = is64 ? 64 : 40
        guard shoff != 0, shnum > 0 else { return .empty }
        guard shentsize >= minimumEntry, shnum <= 0xFF00, shoff <= UInt64(bytes.count),
              UInt64(shentsize * shnum) <= UInt64(bytes.count) - shoff else {
            throw .truncated(what: "section headers")
        }
        struct Section { let type: UInt32; let offset: UInt64; let size: UInt64; let link: Int; let entrySize: UInt64 }
        let sections = (0..<shnum).map { index -> Section in
            let base = Int(shoff) + index * shentsize
            return is64
                ? Section(type: reader.u32(base + 4), offset: reader.u64(base + 24), size: reader.u64(base + 32),
                          link: Int(reader.u32(base + 40)), entrySize: reader.u64(base + 56))
                : Section(type: reader.u32(base + 4), offset: UInt64(reader.u32(base + 16)), size: UInt64(reader.u32(base + 20)),
                          link: Int(reader.u32(base + 24)), entrySize: UInt64(reader.u32(base + 36)))
        }
        func inFile(_ section: Section) -> Bool {
            section.offset <= UInt64(bytes.count) && section.size <= UInt64(bytes.count) - section.offset
        }
        let symtabType: UInt32 = 2, dynsymType: UInt32 = 11, entrySize = is64 ? 24 : 16
        guard let table = sections.firstIndex(where: { $0.type == symtabType })
                ?? sections.firstIndex(where: { $0.type == dynsymType }) else { return .empty }
        let symtab = sections[table]
        guard symtab.link < sections.count else { throw .truncated(what: "symbol string table") }
        let strtab = sections[symtab.link]
        guard inFile(symtab), inFile(strtab), symtab.entrySize == 0 || symtab.entrySize >= UInt64(entrySize) else {
            throw .truncated(what: "symbol table")
        }
        // sh_entsize is the file's to choose; one beyond the table's size means no entries.
        let stride = max(Int(clamping: symtab.entrySize), entrySize)
        var symbols: [Symbol] = []
        for index in 0..<(Int(symtab.size) / stride) {
            let base = Int(symtab.offset) + index * stride
            let nameOffset = UInt64(reader.u32(base))
            let kind = bytes[base + (is64 ? 4 : 12)] & 0xF, sectionIndex = reader.u16(base + (is64 ? 6 : 14))
            // Objects, functions and untyped labels (assembly) that are defined somewhere.
            guard kind <= 2, sectionIndex != 0, nameOffset != 0, nameOffset < strtab.size else { continue }
            let start = Int(strtab.offset + nameOffset)
            let end = bytes[start..<Int(strtab.offset + strtab.size)].firstIndex(of: 0) ?? Int(strtab.offset + strtab.size)
            guard end > start, let name = String(validating: bytes[start..<end], as: UTF8.self) else { continue }
            // Section-relative housekeeping names (".L..", "$x") are not useful to a person.
            guard !name.hasPrefix(".") else { continue }
            let value = is64 ? reader.u64(base + 8) : UInt64(reader.u32(base + 4))
            let size = is64 ? reader.u64(base + 16) : UInt64(reader.u32(base + 8))
            symbols.append(Symbol(name: name, address: value, size: size))
        }
        return SymbolTable(symbols)
    }
}
