import Devices
import Replay
import VMMCore

/// Deterministic mode's hostile inputs: the 8259 pair programmed by a guest, and a
/// record/replay log (a file, or a primary's stream).
enum ReplayTargets {
    /// The master at offsets 0-1, the slave at 2-3, the ELCR at 4-5; host action 0 sets line
    /// (next byte & 15) to (its bit 4), 1 acknowledges (as an injection does), 2 asks for INT.
    static func pic(_ data: [UInt8]) {
        let pic = PIC8259Pair()
        var bus = Bus()
        try! bus.insert(pic.masterPorts, at: BusRange(base: 0, length: 2))
        try! bus.insert(pic.slavePorts, at: BusRange(base: 2, length: 2))
        try! bus.insert(pic.elcrPorts, at: BusRange(base: 4, length: 2))
        var program = DeviceProgram(bus: bus, base: 0, span: 6, clock: FuzzClock())
        program.host = { action, input in
            switch action % 3 {
            case 0:
                let line = input.byte()
                pic.setLevel(irq: Int(line & 15), high: line & 0x10 != 0)
            case 1: _ = pic.acknowledge()
            default: _ = pic.hasPendingInterrupt
            }
        }
        program.run(data)
    }

    /// A log: the header is tried on the whole input; the input after the first byte is also
    /// one chunk's payload with a matching checksum (so the fuzzer reaches the records) and
    /// decoded to its end or its first error.
    static func log(_ data: [UInt8]) {
        if let (length, checksum) = try? ReplayHeader.bodyLength(prefix: data), data.count >= ReplayHeader.prefixSize + length {
            _ = try? ReplayHeader(body: Array(data[ReplayHeader.prefixSize..<(ReplayHeader.prefixSize + length)]), checksum: checksum)
        }
        guard data.count > 1 else { return }
        let payload = Array(data[1...])
        var decoder = ReplayLogDecoder()
        do {
            try decoder.feed(length: UInt32(payload.count), checksum: Digest.of(payload), payload: payload)
            while try decoder.next() != nil {}
        } catch {}
    }

    /// A recording's records, as the seed.
    static func seed() -> [UInt8] {
        var encoder = ReplayLogEncoder()
        let records: [ReplayRecord] = [
            .exit(ExitRecord(kind: .ioOut, address: 0x3F8, size: 1, value: 0x41, rip: 0x100234)), .input(Array("hi\n".utf8)),
            .exit(ExitRecord(kind: .hlt, rip: 0x100300)), .clock(5_000_000), .interrupt(0x24),
            .exit(ExitRecord(kind: .ioIn, address: 0x60, size: 2, count: 4, value: 7, rip: 0x100310)), .balloonTarget(256),
            .balloonStatsInterval(1_000_000), .exit(ExitRecord(kind: .mmioRead, address: 0xD000_0000, size: 4, value: 0x74726976, rip: 0x100400)),
            .end(ReplayEnd(exits: 4, status: 1, atExit: true, memoryDigest: 1, registerDigest: 2, outcome: "debug exit")),
        ]
        for record in records { encoder.append(record) }
        return [0] + encoder.seal().dropFirst(12)
    }
}
