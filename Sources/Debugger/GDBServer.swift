import VMM
import Host
import VMMCore
import Debugging
import Glibc
import KVM

/// The gdb remote stub (`run --gdb`): waits for one gdb connection with the VM parked before its
/// first instruction, then serves the remote protocol until gdb detaches, kills, or the guest ends.
public enum GDBServer {
    public static func serve(machine: Machine, endpoint: SocketEndpoint, imagePath: String) throws(VMMError) -> RunOutcome {
        let listener = FileDescriptor(rawValue: try VMMError.host { () throws(HostError) in try endpoint.listen(for: "gdb stub") })
        defer {
            listener.close()
            if case .unix(let path) = endpoint { unlink(path) }
        }
        writeStandardError("swiftvmm: waiting for gdb on \(endpoint)\n")
        let session = try DebugFrontEnd.start(machine: machine, imagePath: imagePath)
        var connection: FileDescriptor?
        while connection == nil {
            do {
                // Polled, so SIGTERM (which stops the VM) also ends the wait for gdb.
                let ready = try listener.poll(.readable, milliseconds: 200)
                if session.target.isStopping { return session.finish() }
                if !ready.isEmpty { connection = try listener.accept() }
            } catch where error.wouldBlock {
                continue
            } catch {
                session.kill()
                _ = session.finish()
                throw .debugger("gdb stub: accept failed: \(error)")
            }
        }
        guard let connection else { return session.finish() }
        defer { connection.close() }
        var one: Int32 = 1
        setsockopt(connection.rawValue, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        return GDBConnection(session: session, fd: connection).serve()
    }
}

/// One gdb connection over a DebugSession.
final class GDBConnection {
    let session: DebugSession
    let fd: FileDescriptor
    private var reader = GDBPacketReader()
    private var lastStop: DebugStop = .stopped(vcpu: 0, reason: .requested)
    private var running = false
    /// gdb said it understands `swbreak`/`hwbreak` stop reasons.
    private var peerStopReasons = false
    private var finished = false

    init(session: DebugSession, fd: FileDescriptor) {
        self.session = session
        self.fd = fd
    }

    func serve() -> RunOutcome {
        if let stop = session.waitForStop() { lastStop = stop }
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !finished {
            if running {
                if let stop = session.waitForStop(timeout: 0.02) {
                    running = false
                    lastStop = stop
                    send(stopReply(stop))
                    if stop == .ended { break }
                    continue
                }
                guard let ready = try? fd.poll(.readable, milliseconds: 0), !ready.isEmpty else { continue }
            }
            let count = (try? fd.read(into: &buffer)) ?? 0
            guard count > 0 else {
                // gdb went away: let the guest run on without breakpoints, as after a detach.
                if !session.hasEnded { session.detach() }
                break
            }
            for input in reader.feed(buffer[0..<count]) {
                switch input {
                case .packet(let payload):
                    sendRaw([UInt8(ascii: "+")])
                    if running { continue } // all-stop: only the interrupt byte is meaningful now
                    if let reply = handle(GDBRequest.parse(payload)) { send(reply) }
                case .corrupt: sendRaw([UInt8(ascii: "-")])
                case .interrupt: if running { session.interrupt() }
                case .ack, .nack: break
                }
                if finished { break }
            }
        }
        return session.finish()
    }

    private func send(_ payload: String) { sendRaw(GDBPacket.frame(payload)) }

    /// Sends without SIGPIPE; a gdb that went away is noticed by the next read.
    private func sendRaw(_ bytes: [UInt8]) {
        try? fd.writeAll(bytes, socket: true)
    }

    private func thread(_ vcpu: Int) -> String { String(vcpu + 1, radix: 16) }

    private func stopReply(_ stop: DebugStop) -> String {
        switch stop {
        case .ended:
            return "W" + hexByte(UInt8(truncatingIfNeeded: session.finish().exitCode))
        case .stopped(let vcpu, let reason):
            var reply = "T05"
            if peerStopReasons {
                if case .softwareBreakpoint = reason { reply += "swbreak:;" }
                if case .hardwareBreakpoint = reason { reply += "hwbreak:;" }
            }
            return reply + "thread:\(thread(vcpu));"
        }
    }

    /// The reply to one request, or nil when the request takes none (kill).
    private func handle(_ request: GDBRequest) -> String? {
        do {
            switch request {
            case .supported(let features):
                peerStopReasons = features.contains("swbreak+") || features.contains("hwbreak+")
                return "PacketSize=4000;qXfer:features:read+;swbreak+;hwbreak+;vContSupported+"
            case .haltReason: return stopReply(lastStop)
            case .readRegisters: return hexEncode(try registerFile().joined())
            case .writeRegisters(let bytes):
                try writeRegisterFile(bytes)
                return "OK"
            case .readRegister(let number):
                let file = try registerFile()
                guard number < file.count else { return "E01" }
                return hexEncode(file[number])
            case .writeRegister(let number, let bytes):
                var registers = try session.registers()
                guard number < GDBRegisterLayout.registers.count, bytes.count == GDBRegisterLayout.registers[number].size else { return "E01" }
                guard registers.set(GDBRegisterLayout.registers[number].name, to: LittleEndian.load(bytes)) else {
                    return "E01" // segment, x87 and SSE registers are read-only here
                }
                try session.setRegisters(registers)
                return "OK"
            case .readMemory(let address, let length):
                return hexEncode(try session.readVirtual(address, count: length))
            case .writeMemory(let address, let bytes):
                try session.writeVirtual(address, bytes)
                return "OK"
            case .resume(let step, let address):
                if let address {
                    var registers = try session.registers()
                    registers.rip = address
                    try session.setRegisters(registers)
                }
                try resume(step ? .stepInstruction : .run)
                return nil
            case .vContQuery: return "vCont;c;C;s;S"
            case .vCont(let actions):
                if let step = actions.first(where: { $0.kind == .step }) {
                    if case .thread(let id)? = step.thread, id >= 1, id <= session.vcpuCount { session.current = id - 1 }
                    try resume(.stepInstruction)
                } else {
                    try resume(.run)
                }
                return nil
            case .insertBreakpoint(let kind, let address, _):
                return try setBreakpoint(kind, at: address, present: true)
            case .removeBreakpoint(let kind, let address, _):
                return try setBreakpoint(kind, at: address, present: false)
            case .setThread(let operation, let selector):
                if operation == "g", case .thread(let id) = selector {
                    guard id >= 1, id <= session.vcpuCount else { return "E01" }
                    session.current = id - 1
                }
                return "OK"
            case .threadAlive(let selector):
                guard case .thread(let id) = selector, id >= 1, id <= session.vcpuCount,
                      !session.gate.finishedVCPUs.contains(id - 1) else { return "E01" }
                return "OK"
            case .threadInfoFirst:
                let alive = (0..<session.vcpuCount).filter { !session.gate.finishedVCPUs.contains($0) }
                return "m" + (alive.isEmpty ? [0] : alive).map(thread).joined(separator: ",")
            case .threadInfoNext: return "l"
            case .currentThread: return "QC" + thread(session.current)
            case .attached: return "1"
            case .readFeature(let annex, let offset, let length):
                guard annex == "target.xml" else { return "E00" }
                let xml = Array(GDBRegisterLayout.targetXML.utf8)
                guard offset <= xml.count else { return "E01" }
                let end = min(xml.count, offset + length)
                return (end < xml.count ? "m" : "l") + String(decoding: xml[offset..<end], as: UTF8.self)
            case .detach:
                session.detach()
                finished = true
                return "OK"
            case .kill:
                session.kill()
                finished = true
                return nil
            case .unsupported: return ""
            case .malformed: return "E01"
            }
        } catch {
            return "E0e" // EFAULT-like: the address, register or breakpoint could not be used
        }
    }

    /// Z/z: software and hardware breakpoints; watchpoints are not offered (empty reply).
    private func setBreakpoint(_ kind: GDBRequest.BreakpointKind, at address: UInt64, present: Bool) throws(DebugAccessError) -> String {
        switch (kind, present) {
        case (.software, true): try session.insertSoftwareBreakpoint(address)
        case (.software, false): try session.removeSoftwareBreakpoint(address)
        case (.hardware, true): try session.insertHardwareBreakpoint(address)
        case (.hardware, false): try session.removeHardwareBreakpoint(address)
        default: return ""
        }
        return "OK"
    }

    private func resume(_ mode: ResumePlan.Mode) throws(DebugAccessError) {
        try session.resume(mode)
        running = true
    }

    /// Every register in `g` order, each as its little-endian bytes.
    private func registerFile() throws(DebugAccessError) -> [[UInt8]] {
        let regs = try session.registers(), sregs = try session.specialRegisters(), fpu = try session.fpu()
        var file: [[UInt8]] = regs.generalInGDBOrder.map { LittleEndian.bytes($0, size: 8) }
        file.append(LittleEndian.bytes(regs.rip, size: 8))
        file.append(LittleEndian.bytes(regs.rflags, size: 4))
        for segment in [sregs.cs, sregs.ss, sregs.ds, sregs.es, sregs.fs, sregs.gs] {
            file.append(LittleEndian.bytes(UInt64(segment.selector), size: 4))
        }
        file += fpu.st
        // gdb wants the full tag word: 11 (empty) for each register the abridged tag marks unused.
        let tags = (0..<8).reduce(UInt64(0)) { $0 | (fpu.ftwx & (1 << $1) == 0 ? 3 << (2 * UInt64($1)) : 0) }
        for value in [UInt64(fpu.fcw), UInt64(fpu.fsw), tags, 0, fpu.lastIP & 0xFFFF_FFFF, 0, fpu.lastDP & 0xFFFF_FFFF, UInt64(fpu.lastOpcode)] {
            file.append(LittleEndian.bytes(value, size: 4))
        }
        file += fpu.xmm
        file.append(LittleEndian.bytes(UInt64(fpu.mxcsr), size: 4))
        file.append(LittleEndian.bytes(sregs.fs.base, size: 8))
        file.append(LittleEndian.bytes(sregs.gs.base, size: 8))
        return file
    }

    /// `G`: takes the general registers, rip and eflags; the rest is read-only here.
    private func writeRegisterFile(_ bytes: [UInt8]) throws(DebugAccessError) {
        let offsets = GDBRegisterLayout.offsets
        guard bytes.count >= offsets[18] else { throw .unknownRegister("G packet of \(bytes.count) bytes") }
        var registers = try session.registers()
        for number in 0...17 {
            let size = GDBRegisterLayout.registers[number].size
            _ = registers.set(GDBRegisterLayout.registers[number].name, to: LittleEndian.load(bytes[offsets[number]..<(offsets[number] + size)]))
        }
        try session.setRegisters(registers)
    }
}
