import VMMCore
/// The x86-64 register file as this stub presents it to gdb, in `g` packet order, and the target
/// description XML generated from the same table so the two cannot disagree.
public enum GDBRegisterLayout {
    public struct Register: Sendable, Equatable {
        public let name: String
        /// Bytes in the `g` packet.
        public let size: Int
        public let type: String
        public let feature: Feature
        public let group: String?
    }

    public enum Feature: String, Sendable, CaseIterable {
        case core = "org.gnu.gdb.i386.core"
        case sse = "org.gnu.gdb.i386.sse"
        case segments = "org.gnu.gdb.i386.segments"
    }

    /// Index of each general register in `registers` (gdb's amd64 numbering).
    public static let generalNames = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
                                      "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"]
    public static let segmentNames = ["cs", "ss", "ds", "es", "fs", "gs"]
    public static let x87ControlNames = ["fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop"]

    public static let registers: [Register] = {
        var list: [Register] = []
        for name in generalNames {
            let type = name == "rbp" || name == "rsp" ? "data_ptr" : "int64"
            list.append(Register(name: name, size: 8, type: type, feature: .core, group: nil))
        }
        list.append(Register(name: "rip", size: 8, type: "code_ptr", feature: .core, group: nil))
        list.append(Register(name: "eflags", size: 4, type: "i386_eflags", feature: .core, group: nil))
        for name in segmentNames { list.append(Register(name: name, size: 4, type: "int32", feature: .core, group: nil)) }
        for index in 0..<8 { list.append(Register(name: "st\(index)", size: 10, type: "i387_ext", feature: .core, group: nil)) }
        for name in x87ControlNames { list.append(Register(name: name, size: 4, type: "int", feature: .core, group: "float")) }
        for index in 0..<16 { list.append(Register(name: "xmm\(index)", size: 16, type: "vec128", feature: .sse, group: nil)) }
        list.append(Register(name: "mxcsr", size: 4, type: "i386_mxcsr", feature: .sse, group: "vector"))
        list.append(Register(name: "fs_base", size: 8, type: "int", feature: .segments, group: nil))
        list.append(Register(name: "gs_base", size: 8, type: "int", feature: .segments, group: nil))
        return list
    }()

    public static func index(of name: String) -> Int? { registers.firstIndex { $0.name == name } }

    /// Byte offset of each register in the `g` packet.
    public static let offsets: [Int] = registers.reduce(into: [Int]()) { offsets, register in
        offsets.append((offsets.last ?? 0) + (offsets.isEmpty ? 0 : registers[offsets.count - 1].size))
    }

    public static var packetSize: Int { registers.reduce(0) { $0 + $1.size } }

    /// The `target.xml` annex gdb reads with qXfer:features:read.
    public static let targetXML: String = {
        var xml = """
        <?xml version="1.0"?>
        <!DOCTYPE target SYSTEM "gdb-target.dtd">
        <target version="1.0">
        <architecture>i386:x86-64</architecture>

        """
        for feature in Feature.allCases {
            xml += "<feature name=\"\(feature.rawValue)\">\n"
            xml += featureTypes[feature] ?? ""
            for (number, register) in registers.enumerated() where register.feature == feature {
                let group = register.group.map { " group=\"\($0)\"" } ?? ""
                xml += "<reg name=\"\(register.name)\" bitsize=\"\(register.size * 8)\" type=\"\(register.type)\" regnum=\"\(number)\"\(group)/>\n"
            }
            xml += "</feature>\n"
        }
        return xml + "</target>\n"
    }()

    private static let featureTypes: [Feature: String] = [
        .core: """
        <flags id="i386_eflags" size="4">
        <field name="CF" start="0" end="0"/><field name="" start="1" end="1"/><field name="PF" start="2" end="2"/>
        <field name="AF" start="4" end="4"/><field name="ZF" start="6" end="6"/><field name="SF" start="7" end="7"/>
        <field name="TF" start="8" end="8"/><field name="IF" start="9" end="9"/><field name="DF" start="10" end="10"/>
        <field name="OF" start="11" end="11"/><field name="NT" start="14" end="14"/><field name="RF" start="16" end="16"/>
        <field name="VM" start="17" end="17"/><field name="AC" start="18" end="18"/><field name="VIF" start="19" end="19"/>
        <field name="VIP" start="20" end="20"/><field name="ID" start="21" end="21"/>
        </flags>

        """,
        .sse: """
        <vector id="v4f" type="ieee_single" count="4"/>
        <vector id="v2d" type="ieee_double" count="2"/>
        <vector id="v16i8" type="int8" count="16"/>
        <vector id="v8i16" type="int16" count="8"/>
        <vector id="v4i32" type="int32" count="4"/>
        <vector id="v2i64" type="int64" count="2"/>
        <union id="vec128">
        <field name="v4_float" type="v4f"/><field name="v2_double" type="v2d"/><field name="v16_int8" type="v16i8"/>
        <field name="v8_int16" type="v8i16"/><field name="v4_int32" type="v4i32"/><field name="v2_int64" type="v2i64"/>
        <field name="uint128" type="uint128"/>
        </union>
        <flags id="i386_mxcsr" size="4">
        <field name="IE" start="0" end="0"/><field name="DE" start="1" end="1"/><field name="ZE" start="2" end="2"/>
        <field name="OE" start="3" end="3"/><field name="UE" start="4" end="4"/><field name="PE" start="5" end="5"/>
        <field name="DAZ" start="6" end="6"/><field name="IM" start="7" end="7"/><field name="DM" start="8" end="8"/>
        <field name="ZM" start="9" end="9"/><field name="OM" start="10" end="10"/><field name="UM" start="11" end="11"/>
        <field name="PM" start="12" end="12"/><field name="FZ" start="15" end="15"/>
        </flags>

        """,
    ]
}
