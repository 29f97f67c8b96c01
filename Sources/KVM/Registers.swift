import CKVM

/// General-purpose registers of a vCPU (KVM_GET_REGS/KVM_SET_REGS).
public struct Registers: Sendable, Equatable {
    public var rax: UInt64 = 0, rbx: UInt64 = 0, rcx: UInt64 = 0, rdx: UInt64 = 0
    public var rsi: UInt64 = 0, rdi: UInt64 = 0, rsp: UInt64 = 0, rbp: UInt64 = 0
    public var r8: UInt64 = 0, r9: UInt64 = 0, r10: UInt64 = 0, r11: UInt64 = 0
    public var r12: UInt64 = 0, r13: UInt64 = 0, r14: UInt64 = 0, r15: UInt64 = 0
    public var rip: UInt64 = 0
    /// Bit 1 is reserved and always set.
    public var rflags: UInt64 = 0x2

    public init() {}

    init(_ r: kvm_regs) {
        (rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp) = (r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rsp, r.rbp)
        (r8, r9, r10, r11, r12, r13, r14, r15) = (r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15)
        (rip, rflags) = (r.rip, r.rflags)
    }

    var raw: kvm_regs {
        kvm_regs(rax: rax, rbx: rbx, rcx: rcx, rdx: rdx, rsi: rsi, rdi: rdi, rsp: rsp, rbp: rbp,
                 r8: r8, r9: r9, r10: r10, r11: r11, r12: r12, r13: r13, r14: r14, r15: r15,
                 rip: rip, rflags: rflags)
    }
}

/// A segment register in its descriptor-cache form.
public struct Segment: Sendable, Equatable {
    public var base: UInt64 = 0
    public var limit: UInt32 = 0
    public var selector: UInt16 = 0
    public var type: UInt8 = 0
    public var present: Bool = false
    public var dpl: UInt8 = 0
    /// D/B: default operand size 32 bits.
    public var db: Bool = false
    /// S: code/data (true) or system (false) segment.
    public var s: Bool = false
    /// L: 64-bit code segment.
    public var l: Bool = false
    /// G: limit in 4 KiB units.
    public var g: Bool = false
    public var avl: Bool = false
    public var unusable: Bool = false

    public init(base: UInt64 = 0, limit: UInt32 = 0, selector: UInt16 = 0, type: UInt8 = 0, present: Bool = false,
                dpl: UInt8 = 0, db: Bool = false, s: Bool = false, l: Bool = false, g: Bool = false,
                avl: Bool = false, unusable: Bool = false) {
        self.base = base
        self.limit = limit
        self.selector = selector
        self.type = type
        self.present = present
        self.dpl = dpl
        self.db = db
        self.s = s
        self.l = l
        self.g = g
        self.avl = avl
        self.unusable = unusable
    }

    init(_ r: kvm_segment) {
        self.init(base: r.base, limit: r.limit, selector: r.selector, type: r.type, present: r.present != 0,
                  dpl: r.dpl, db: r.db != 0, s: r.s != 0, l: r.l != 0, g: r.g != 0, avl: r.avl != 0,
                  unusable: r.unusable != 0)
    }

    var raw: kvm_segment {
        var r = kvm_segment()
        r.base = base
        r.limit = limit
        r.selector = selector
        r.type = type
        r.present = present ? 1 : 0
        r.dpl = dpl
        r.db = db ? 1 : 0
        r.s = s ? 1 : 0
        r.l = l ? 1 : 0
        r.g = g ? 1 : 0
        r.avl = avl ? 1 : 0
        r.unusable = unusable ? 1 : 0
        return r
    }
}

/// A descriptor-table register (GDTR/IDTR).
public struct DescriptorTable: Sendable, Equatable {
    public var base: UInt64 = 0
    public var limit: UInt16 = 0

    public init(base: UInt64 = 0, limit: UInt16 = 0) {
        self.base = base
        self.limit = limit
    }
}

/// Segment, control and descriptor-table registers (KVM_GET_SREGS/KVM_SET_SREGS).
public struct SpecialRegisters: Sendable, Equatable {
    public var cs = Segment(), ds = Segment(), es = Segment(), fs = Segment()
    public var gs = Segment(), ss = Segment(), tr = Segment(), ldt = Segment()
    public var gdt = DescriptorTable(), idt = DescriptorTable()
    public var cr0: UInt64 = 0, cr2: UInt64 = 0, cr3: UInt64 = 0, cr4: UInt64 = 0, cr8: UInt64 = 0
    public var efer: UInt64 = 0
    public var apicBase: UInt64 = 0
    /// KVM's pending-interrupt bitmap, carried through unchanged between get and set.
    var interruptBitmap: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)

    public init() {}

    init(_ r: kvm_sregs) {
        cs = Segment(r.cs); ds = Segment(r.ds); es = Segment(r.es); fs = Segment(r.fs)
        gs = Segment(r.gs); ss = Segment(r.ss); tr = Segment(r.tr); ldt = Segment(r.ldt)
        gdt = DescriptorTable(base: r.gdt.base, limit: r.gdt.limit)
        idt = DescriptorTable(base: r.idt.base, limit: r.idt.limit)
        (cr0, cr2, cr3, cr4, cr8, efer, apicBase) = (r.cr0, r.cr2, r.cr3, r.cr4, r.cr8, r.efer, r.apic_base)
        interruptBitmap = r.interrupt_bitmap
    }

    var raw: kvm_sregs {
        var r = kvm_sregs()
        r.cs = cs.raw; r.ds = ds.raw; r.es = es.raw; r.fs = fs.raw
        r.gs = gs.raw; r.ss = ss.raw; r.tr = tr.raw; r.ldt = ldt.raw
        r.gdt.base = gdt.base; r.gdt.limit = gdt.limit
        r.idt.base = idt.base; r.idt.limit = idt.limit
        (r.cr0, r.cr2, r.cr3, r.cr4, r.cr8, r.efer, r.apic_base) = (cr0, cr2, cr3, cr4, cr8, efer, apicBase)
        r.interrupt_bitmap = interruptBitmap
        return r
    }

    public static func == (a: SpecialRegisters, b: SpecialRegisters) -> Bool {
        a.cs == b.cs && a.ds == b.ds && a.es == b.es && a.fs == b.fs && a.gs == b.gs && a.ss == b.ss
            && a.tr == b.tr && a.ldt == b.ldt && a.gdt == b.gdt && a.idt == b.idt && a.cr0 == b.cr0
            && a.cr2 == b.cr2 && a.cr3 == b.cr3 && a.cr4 == b.cr4 && a.cr8 == b.cr8 && a.efer == b.efer
            && a.apicBase == b.apicBase
    }
}

extension Registers {
    /// Sets a general register, rip or rflags by name; false for an unknown name.
    public mutating func set(_ name: String, to value: UInt64) -> Bool {
        switch name {
        case "rax": rax = value
        case "rbx": rbx = value
        case "rcx": rcx = value
        case "rdx": rdx = value
        case "rsi": rsi = value
        case "rdi": rdi = value
        case "rbp": rbp = value
        case "rsp": rsp = value
        case "r8": r8 = value
        case "r9": r9 = value
        case "r10": r10 = value
        case "r11": r11 = value
        case "r12": r12 = value
        case "r13": r13 = value
        case "r14": r14 = value
        case "r15": r15 = value
        case "rip", "pc": rip = value
        case "rflags", "eflags": rflags = value | 0x2
        default: return false
        }
        return true
    }

    /// The 16 general registers in the order instructions encode them (rax, rcx, rdx, rbx, rsp,
    /// rbp, rsi, rdi, r8-r15).
    public var generalInHardwareOrder: [UInt64] {
        get { [rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15] }
        set {
            (rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi) = (newValue[0], newValue[1], newValue[2], newValue[3], newValue[4], newValue[5], newValue[6], newValue[7])
            (r8, r9, r10, r11, r12, r13, r14, r15) = (newValue[8], newValue[9], newValue[10], newValue[11], newValue[12], newValue[13], newValue[14], newValue[15])
        }
    }

    /// The 16 general registers in gdb's order (rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp, r8-r15).
    public var generalInGDBOrder: [UInt64] {
        [rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp, r8, r9, r10, r11, r12, r13, r14, r15]
    }
}
