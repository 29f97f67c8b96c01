import KVM
import VMMCore

/// Completes the few instructions PVM's instruction emulator (which runs all guest kernel-mode
/// code on this kind of host) gives up on, seen with Linux and with test kernels: int3, fwait,
/// clac and stac, popcnt, ldmxcsr/stmxcsr, `int imm8` (delivered through the guest's IDT), and the
/// instructions the CPU rejects with #UD (register-form movbe, xgetbv with CR4.OSXSAVE clear,
/// invpcid, rdpru and clwb where the guest's CPUID does not offer them: #UD injected). It acts
/// only when KVM reports an emulation failure carrying the instruction's bytes, so on VT-x/AMD-V,
/// where these never fail, it never runs. Counted per vCPU (`--stats`: pvm_compat).
enum PVMCompat {
    /// What the guest's CPUID offers of the instructions whose absence means #UD.
    struct Features: Equatable, Sendable {
        var invpcid = false, rdpru = false, clwb = false

        init(invpcid: Bool = false, rdpru: Bool = false, clwb: Bool = false) { (self.invpcid, self.rdpru, self.clwb) = (invpcid, rdpru, clwb) }

        /// From a vCPU's CPUID table: leaf 7 EBX bits 10 (INVPCID) and 24 (CLWB), leaf
        /// 0x80000008 EBX bit 4 (RDPRU).
        init(cpuid: [CPUIDEntry]) {
            let leaf7 = cpuid.first { $0.function == 7 && $0.index == 0 }?.ebx ?? 0
            let extended = cpuid.first { $0.function == 0x8000_0008 }?.ebx ?? 0
            self.init(invpcid: leaf7 & 1 << 10 != 0, rdpru: extended & 1 << 4 != 0, clwb: leaf7 & 1 << 24 != 0)
        }
    }

    enum Completion: String, Sendable {
        /// int3: RIP moves past it and #BP is delivered to the guest, as the CPU would.
        case int3
        /// fwait with no x87 exception pending: nothing to do but move on.
        case fwait
        /// clac / stac: clear or set RFLAGS.AC.
        case clac, stac
        /// popcnt between registers (Linux's hweight alternatives).
        case popcnt
        /// ldmxcsr / stmxcsr with a memory operand (kernel FPU sections).
        case ldmxcsr, stmxcsr
        /// int imm8: RIP moves past it and the vector is delivered through the IDT.
        case softwareInterrupt = "int"
        /// iret in 32-bit protected mode, returning to the same code segment (an interrupt
        /// handler's return): EIP, CS and EFLAGS popped as the CPU does.
        case iret32 = "iret"
        /// Instructions the CPU would reject: #UD injected, RIP left at the instruction.
        case undefinedMOVBE = "ud-movbe", undefinedXGETBV = "ud-xgetbv", undefinedINVPCID = "ud-invpcid"
        case undefinedRDPRU = "ud-rdpru", undefinedCLWB = "ud-clwb"

        /// The instruction raises #UD in this situation (RIP stays).
        var isUndefined: Bool { rawValue.hasPrefix("ud-") }
    }

    /// A ModRM memory operand, in 64-bit mode: [base + index * scale + displacement], or
    /// RIP-relative (relative to the next instruction), plus an FS/GS segment override.
    struct MemoryOperand: Equatable {
        var base: Int?
        var index: Int?
        var scale: UInt64 = 1
        var displacement: Int64 = 0
        var ripRelative = false
        /// 0x64 (FS) or 0x65 (GS) when the instruction carries that prefix.
        var segmentPrefix: UInt8?
    }

    /// Decodes the ModRM (and SIB, displacement) at `bytes[start...]` as a memory operand. Returns
    /// the operand, the ModRM reg field and the bytes consumed; nil for a register operand.
    static func memoryOperand(_ bytes: [UInt8], at start: Int, rex: UInt8) -> (MemoryOperand, reg: Int, length: Int)? {
        guard start < bytes.count else { return nil }
        let modrm = bytes[start], mod = modrm >> 6, rm = modrm & 7
        guard mod != 3 else { return nil }
        var operand = MemoryOperand()
        var cursor = start + 1
        if rm == 4 {
            guard cursor < bytes.count else { return nil }
            let sib = bytes[cursor]
            cursor += 1
            let index = Int((sib >> 3) & 7) | (rex & 0x2 != 0 ? 8 : 0)
            if index != 4 { operand.index = index; operand.scale = 1 << UInt64(sib >> 6) }
            let base = sib & 7
            if !(base == 5 && mod == 0) { operand.base = Int(base) | (rex & 0x1 != 0 ? 8 : 0) }
            else { operand.displacement = 0 } // disp32 follows, no base
            if base == 5 && mod == 0 {
                guard cursor + 4 <= bytes.count else { return nil }
                operand.displacement = Int64(Int32(bitPattern: UInt32(LittleEndian.load(bytes[cursor..<(cursor + 4)]))))
                cursor += 4
            }
        } else if rm == 5 && mod == 0 {
            operand.ripRelative = true
            guard cursor + 4 <= bytes.count else { return nil }
            operand.displacement = Int64(Int32(bitPattern: UInt32(LittleEndian.load(bytes[cursor..<(cursor + 4)]))))
            cursor += 4
        } else {
            operand.base = Int(rm) | (rex & 0x1 != 0 ? 8 : 0)
        }
        if mod == 1 {
            guard cursor < bytes.count else { return nil }
            operand.displacement = Int64(Int8(bitPattern: bytes[cursor]))
            cursor += 1
        } else if mod == 2 {
            guard cursor + 4 <= bytes.count else { return nil }
            operand.displacement = Int64(Int32(bitPattern: UInt32(LittleEndian.load(bytes[cursor..<(cursor + 4)]))))
            cursor += 4
        }
        return (operand, Int((modrm >> 3) & 7), cursor - start)
    }

    /// A register-to-register popcnt: destination and source register numbers, operand bytes.
    struct RegisterOperands: Equatable {
        let destination: Int, source: Int, size: Int
    }

    /// KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES: data[1...] hold the length, then the bytes.
    static let instructionBytesFlag: UInt64 = 1

    /// The instruction bytes an emulation-failure report carries (empty when it carries none).
    static func instructionBytes(_ data: [UInt64]) -> [UInt8] {
        guard data.count >= 2, data[0] & instructionBytesFlag != 0 else { return [] }
        let raw = data.dropFirst().flatMap { LittleEndian.bytes($0) }
        let length = min(Int(raw[0]), 15, raw.count - 1)
        return Array(raw[1..<(1 + length)])
    }

    /// What to do for `bytes` (prefixes skipped), and the instruction's length; nil when the
    /// instruction is not one this layer completes.
    static func decode(_ bytes: [UInt8]) -> (Completion, length: Int)? {
        decodeWithOperands(bytes).map { ($0.0, $0.length) }
    }

    static func decodeWithOperands(_ bytes: [UInt8]) -> (Completion, length: Int, operands: RegisterOperands?)? {
        decodeAll(bytes).map { ($0.0, $0.length, $0.operands) }
    }

    static func decodeAll(_ bytes: [UInt8]) -> (Completion, length: Int, operands: RegisterOperands?, memory: MemoryOperand?)? {
        var index = 0, rex: UInt8 = 0, operandSize16 = false, repz = false, repnz = false, segment: UInt8?
        while index < bytes.count, [0x66, 0x67, 0xF2, 0xF3, 0x2E, 0x3E, 0x26, 0x36, 0x64, 0x65].contains(bytes[index]) || (0x40...0x4F).contains(bytes[index]) {
            if (0x40...0x4F).contains(bytes[index]) { rex = bytes[index] } else { rex = 0 } // REX counts only right before the opcode
            if bytes[index] == 0x66 { operandSize16 = true }
            if bytes[index] == 0xF3 { repz = true }
            if bytes[index] == 0xF2 { repnz = true }
            if bytes[index] == 0x64 || bytes[index] == 0x65 { segment = bytes[index] }
            index += 1
        }
        let rest = bytes[index...]
        // ldmxcsr m32 (0F AE /2) and stmxcsr m32 (0F AE /3), without other prefixes that change them.
        if !repz, !operandSize16, Array(rest.prefix(2)) == [0x0F, 0xAE],
           let (memory, reg, length) = memoryOperand(bytes, at: index + 2, rex: rex), reg == 2 || reg == 3 {
            var operand = memory
            operand.segmentPrefix = segment
            return (reg == 2 ? .ldmxcsr : .stmxcsr, index + 2 + length, nil, operand)
        }
        // popcnt r, r/m: F3 [REX] 0F B8 /r, register form (mod = 11) only.
        if repz, Array(rest.prefix(2)) == [0x0F, 0xB8], rest.count >= 3, rest[rest.startIndex + 2] >> 6 == 3 {
            let modrm = rest[rest.startIndex + 2]
            let destination = Int((modrm >> 3) & 7) | (rex & 0x4 != 0 ? 8 : 0)
            let source = Int(modrm & 7) | (rex & 0x1 != 0 ? 8 : 0)
            let size = rex & 0x8 != 0 ? 8 : operandSize16 ? 2 : 4
            return (.popcnt, index + 3, RegisterOperands(destination: destination, source: source, size: size), nil)
        }
        let opcode = Array(rest.prefix(4))
        // movbe r, r (0F 38 F0/F1 with mod = 11): only the memory forms exist. F2 makes it crc32.
        if !repnz, opcode.count == 4, opcode[0] == 0x0F, opcode[1] == 0x38, opcode[2] == 0xF0 || opcode[2] == 0xF1, opcode[3] >> 6 == 3 {
            return (.undefinedMOVBE, index + 4, nil, nil)
        }
        // invpcid r, m128: 66 0F 38 82 /r.
        if operandSize16, opcode.count == 4, opcode[0] == 0x0F, opcode[1] == 0x38, opcode[2] == 0x82 {
            return (.undefinedINVPCID, index + 4, nil, nil)
        }
        // clwb m8: 66 0F AE /6, memory form.
        if operandSize16, !repz, opcode.count >= 3, opcode[0] == 0x0F, opcode[1] == 0xAE, opcode[2] >> 6 != 3, (opcode[2] >> 3) & 7 == 6 {
            return (.undefinedCLWB, index + 3, nil, nil)
        }
        switch Array(rest.prefix(3)) {
        case let opcode where opcode.first == 0xCF && !operandSize16 && rex & 0x8 == 0: return (.iret32, index + 1, nil, nil)
        case let opcode where opcode.first == 0xCD && opcode.count >= 2: return (.softwareInterrupt, index + 2, nil, nil)
        case [0x0F, 0x01, 0xD0]: return (.undefinedXGETBV, index + 3, nil, nil)
        case [0x0F, 0x01, 0xFD]: return (.undefinedRDPRU, index + 3, nil, nil)
        case let opcode where opcode.first == 0xCC: return (.int3, index + 1, nil, nil)
        case let opcode where opcode.first == 0x9B: return (.fwait, index + 1, nil, nil)
        case [0x0F, 0x01, 0xCA]: return (.clac, index + 3, nil, nil)
        case [0x0F, 0x01, 0xCB]: return (.stac, index + 3, nil, nil)
        default: return nil
        }
    }

    /// Where a memory operand points, through the vCPU's page tables; nil when unmapped or when
    /// its 4 bytes would cross a page.
    static func physicalAddress(of operand: MemoryOperand, regs: Registers, length: Int, vcpu: VCPU) -> UInt64? {
        let values = regs.generalInHardwareOrder
        var address = UInt64(bitPattern: operand.displacement)
        if operand.ripRelative { address &+= regs.rip &+ UInt64(length) }
        if let base = operand.base { address &+= values[base] }
        if let index = operand.index { address &+= values[index] &* operand.scale }
        if let prefix = operand.segmentPrefix, let sregs = try? vcpu.specialRegisters() {
            address &+= prefix == 0x64 ? sregs.fs.base : sregs.gs.base
        }
        guard address & 0xFFF <= 0xFFC, let translation = try? vcpu.translate(address), translation.valid else { return nil }
        return translation.physicalAddress
    }

    /// Completes the failed instruction on `vcpu`; returns what it did, or nil to let the failure stand.
    static func complete(_ data: [UInt64], on vcpu: VCPU, memory: GuestMemory, features: Features = Features()) -> Completion? {
        let bytes = instructionBytes(data)
        guard let (completion, length, operands, memoryOperand) = decodeAll(bytes),
              var regs = try? vcpu.registers() else { return nil }
        if completion.isUndefined {
            // Only where the CPU would refuse it: an instruction it would run is left to the failure.
            let cr4 = (try? vcpu.specialRegisters().cr4) ?? 0
            guard raisesUndefined(completion, features: features, osxsave: cr4 & 1 << 18 != 0) else { return nil }
            do { try vcpu.injectException(6) } catch { return nil }
            return completion
        }
        if completion == .iret32 { return returnFromInterrupt32(vcpu: vcpu, memory: memory, regs: regs) ? completion : nil }
        switch completion {
        case .iret32: return nil // handled above
        case .fwait:
            // An unmasked x87 exception pending (FSW.ES) would need #MF: leave that to the failure.
            guard let fpu = try? vcpu.fpu(), fpu.fsw & 0x80 == 0 else { return nil }
        case .clac: regs.rflags &= ~(1 << 18)
        case .stac: regs.rflags |= 1 << 18
        case .int3, .softwareInterrupt: break
        case .undefinedMOVBE, .undefinedXGETBV, .undefinedINVPCID, .undefinedRDPRU, .undefinedCLWB: return nil // handled above
        case .popcnt:
            guard let operands else { return nil }
            var values = regs.generalInHardwareOrder
            let mask: UInt64 = operands.size == 8 ? .max : (1 << (8 * UInt64(operands.size))) - 1
            let source = values[operands.source] & mask
            let count = UInt64(source.nonzeroBitCount)
            // A 32-bit destination is zero-extended; a 16-bit one keeps its upper bits.
            values[operands.destination] = operands.size == 2 ? (values[operands.destination] & ~0xFFFF) | count : count
            regs.generalInHardwareOrder = values
            // popcnt clears OF, SF, ZF, AF, CF, PF, then sets ZF when the source was zero.
            regs.rflags &= ~UInt64(0x8D5)
            if source == 0 { regs.rflags |= 0x40 }
        case .ldmxcsr, .stmxcsr:
            guard let memoryOperand, let physical = physicalAddress(of: memoryOperand, regs: regs, length: length, vcpu: vcpu),
                  memory.contains(physical, length: 4) else { return nil }
            if completion == .ldmxcsr {
                // Reserved bits set would be #GP: leave that to the failure.
                guard let value = try? memory.load(UInt32.self, at: physical), value & 0xFFFF_0000 == 0,
                      (try? vcpu.setMXCSR(value)) != nil else { return nil }
            } else {
                guard let value = try? vcpu.mxcsr(), (try? memory.store(value, at: physical)) != nil else { return nil }
            }
        }
        regs.rip &+= UInt64(length)
        do {
            if completion == .softwareInterrupt {
                // The frame's return address is the next instruction, as `int` pushes it. An
                // event already being delivered leaves the failure standing.
                let vector = bytes[length - 1]
                try vcpu.setRegisters(regs)
                guard try vcpu.injectInterrupt(vector) else {
                    regs.rip &-= UInt64(length)
                    try vcpu.setRegisters(regs)
                    return nil
                }
                return completion
            }
            try vcpu.setRegisters(regs)
            if completion == .int3 { try vcpu.injectException(3) }
        } catch {
            return nil
        }
        return completion
    }

    /// A 32-bit IRET at CPL 0 to the same privilege level and code segment: EIP, CS and EFLAGS
    /// popped from SS:ESP. Anything else (a 64-bit or 16-bit code segment, real or virtual-8086
    /// mode, a task return with NT set, another code segment or privilege level, a stack that is
    /// not RAM) is left to the failure.
    static func returnFromInterrupt32(vcpu: VCPU, memory: GuestMemory, regs: Registers) -> Bool {
        guard let sregs = try? vcpu.specialRegisters(), sregs.cr0 & 1 != 0, !sregs.cs.l, sregs.cs.db,
              regs.rflags & (1 << 14 | 1 << 17) == 0 else { return false }
        let stackMask: UInt64 = sregs.ss.db ? 0xFFFF_FFFF : 0xFFFF
        let esp = regs.rsp & stackMask
        var popped: [UInt32] = []
        for slot in 0..<3 {
            let linear = (sregs.ss.base &+ ((esp &+ UInt64(slot * 4)) & stackMask)) & 0xFFFF_FFFF
            guard let translation = try? vcpu.translate(linear), translation.valid, linear & 0xFFF <= 0xFFC,
                  let value = try? memory.load(UInt32.self, at: translation.physicalAddress) else { return false }
            popped.append(value)
        }
        let (eip, cs, eflags) = (popped[0], UInt16(truncatingIfNeeded: popped[1]), popped[2])
        guard cs == sregs.cs.selector, eflags & (1 << 17) == 0 else { return false }
        var next = regs
        next.rip = UInt64(eip)
        // Every flag is writable at CPL 0 but VM; bit 1 is always set.
        next.rflags = UInt64(eflags & 0x003D_7FD5) | 0x2
        next.rsp = (regs.rsp & ~stackMask) | ((esp &+ 12) & stackMask)
        return (try? vcpu.setRegisters(next)) != nil
    }

    /// Whether the CPU raises #UD for `completion` (one of the undefined cases) given what the
    /// guest's CPUID offers and CR4.OSXSAVE.
    static func raisesUndefined(_ completion: Completion, features: Features, osxsave: Bool) -> Bool {
        switch completion {
        case .undefinedMOVBE: true
        case .undefinedXGETBV: !osxsave
        case .undefinedINVPCID: !features.invpcid
        case .undefinedRDPRU: !features.rdpru
        case .undefinedCLWB: !features.clwb
        default: false
        }
    }
}
