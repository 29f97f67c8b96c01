import Devices
import VMM
import VMMCore

/// A snapshot's state file as hostile input: the header and checksummed sections are parsed, and
/// each device state in a DEVS section is restored into a fresh device of its name (the UART, our
/// PIT, the RTC, fw_cfg, the balloon over 16 MiB of RAM), as a restore does before any vCPU runs.
/// The fuzzer mostly finds inputs the CRCs refuse; the seed's sections carry right CRCs, and
/// FuzzInput-derived mutations inside them get past the check when the input rewrites the CRC too.
enum SnapshotTarget {
    static let memorySize = 16 << 20

    /// The devices a DEVS section may name, fresh for each input.
    static func devices(memory: GuestMemory) -> [String: any SnapshotDevice] {
        let clock = FuzzClock()
        return [
            "uart": Serial16550(interrupt: FuzzLine(), output: CountingSerialOutput()),
            "pit": PIT8254(interrupt: FuzzLine(), clock: clock, scheduler: ManualTimerScheduler()),
            "rtc": CMOSRTC(interrupt: FuzzLine(), clock: clock, wallClock: clock, scheduler: ManualTimerScheduler()),
            "fw_cfg": FwCfg(ramSize: UInt64(memorySize), cpus: 1),
            "virtio-balloon": VirtioMMIODevice(model: BalloonModel(), memory: memory, interrupt: FuzzLine(), clock: clock,
                                               scheduler: ManualTimerScheduler()),
        ]
    }

    static func state(_ data: [UInt8]) {
        // The CRCs would stop nearly every mutation at the door: an input that begins with "!"
        // gets its sections' checksums computed for it, so the decoders behind them are reached.
        let bytes = data.first == 0x21 ? resealed(Array(data.dropFirst())) : data
        guard let file = try? SnapshotFile(decoding: bytes) else { return }
        let memory = try! GuestMemory(ranges: [(start: 0, size: memorySize)])
        let devices = devices(memory: memory)
        for section in file.sections where section.tag == "DEVS" {
            var input = StateReader(section.payload, context: "devices")
            guard let count = try? input.count("devices", maximum: 64) else { continue }
            for _ in 0..<count {
                guard let name = try? input.string("name", maximum: 64), let state = try? input.blob("state", maximum: 1 << 20) else { break }
                _ = try? devices[name]?.restoreState(state, now: 5_000_000_000)
            }
        }
    }

    /// `bytes` with every section's CRC (and the header's) recomputed, where its framing parses.
    static func resealed(_ bytes: [UInt8]) -> [UInt8] {
        var out = bytes
        guard out.count >= SnapshotFile.headerSize else { return out }
        LittleEndian.store(CRC32.checksum(out.prefix(SnapshotFile.headerSize - 4)), into: &out, at: SnapshotFile.headerSize - 4)
        var offset = SnapshotFile.headerSize
        while offset + SnapshotFile.sectionHeaderSize <= out.count {
            let length = Int(clamping: LittleEndian.load(out, at: offset + 8, size: 8))
            let end = offset + SnapshotFile.sectionHeaderSize
            guard length <= out.count - end else { break }
            let crc = CRC32.checksum(out[end..<(end + length)], continuing: CRC32.checksum(out[offset..<(offset + 16)]))
            LittleEndian.store(crc, into: &out, at: offset + 16)
            offset = end + length
        }
        return out
    }

    /// A state file of every device above, as they are after a little use.
    static func seed() -> [UInt8] {
        let memory = try! GuestMemory(ranges: [(start: 0, size: memorySize)])
        var out = StateWriter()
        let devices = devices(memory: memory).sorted { $0.key < $1.key }
        if let uart = devices.first(where: { $0.key == "uart" })?.value as? Serial16550<FuzzLine, CountingSerialOutput> {
            uart.write(offset: 2, size: 1, value: 1)
            _ = uart.receive(Array("seed".utf8))
        }
        out.u32(UInt32(devices.count))
        for (name, device) in devices {
            out.string(name)
            out.blob(device.saveState(now: 5_000_000_000))
        }
        return [0x21] + SnapshotFile(sections: [.init("DEVS", out.bytes)]).encoded
    }
}
