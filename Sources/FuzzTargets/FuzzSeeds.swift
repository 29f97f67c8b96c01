import Debugging
import Devices

/// Seed inputs for the targets whose inputs are programs or text: what a well-behaved guest or
/// client does, so the fuzzer starts from deep inside each device rather than at its first
/// register. (`swiftvmm-fuzz seed DIR` writes them; the loader targets are seeded with built
/// guest images instead.) The corpora under Fuzz/corpus are these plus what fuzzing kept.
public enum FuzzSeeds {
    public static func seeds(for target: FuzzTarget) -> [String: [UInt8]] {
        switch target {
        case .uart: ["init-echo": uart()]
        case .pit: ["modes": pit()]
        case .rtc: ["interrupts-and-set": rtc()]
        case .fwCfg: ["items": fwCfg()]
        case .testDevice: ["ports": testDevice()]
        case .virtioBalloon: ["inflate-deflate-stats": balloon(statsFirst: false), "stats": balloon(statsFirst: true)]
        case .virtioBlock: ["write-read-flush-id": block()]
        case .virtioNet: ["send-receive-announce": net()]
        case .gdb: ["session": gdb()]
        case .commands: ["lines": Array(commandLines.utf8)]
        case .hostConfig: ["host": Array(hostConfig.utf8)]
        case .api: ["session": Array(APITarget.seed.utf8)]
        case .snapshot: ["devices": SnapshotTarget.seed()]
        case .share: ["calls": ShareTarget.seed()]
        case .acpiPM: ["sleep-wake": acpiPM()]
        case .pic: ["init-eoi": pic()]
        case .replayLog: ["records": ReplayTargets.seed()]
        case .linux: ["bzimage": bzImage()]
        case .elf, .multiboot, .image: [:]
        }
    }

    /// ICW1-4 on both chips, masks, a line raised and acknowledged, EOIs, an OCW3 read.
    static func pic() -> [UInt8] {
        var p = DeviceProgramWriter()
        for (offset, value) in [(0, 0x11), (2, 0x11), (1, 0x20), (3, 0x28), (1, 0x04), (3, 0x02), (1, 0x01), (3, 0x01), (1, 0xF8), (3, 0xFE)] {
            p.write(UInt64(offset), UInt64(value))
        }
        p.host(0)
        p.raw(0x18, 1) // IRQ 8 high
        p.host(2)
        p.host(1)
        p.write(2, 0x20)
        p.write(0, 0x20)
        p.write(0, 0x0B)
        p.read(0)
        p.write(5, 0xFF)
        p.host(0)
        p.raw(0x1B, 1) // IRQ 11 high, level-triggered
        p.host(1)
        return p.bytes
    }

    /// Enables, a timer read across a wait, a button press, status cleared, then SLP_EN for S3,
    /// a wake and SLP_EN for S5.
    static func acpiPM() -> [UInt8] {
        var p = DeviceProgramWriter()
        p.write(2, 0x0501, width: 2)
        p.read(8, width: 4)
        p.wait(50_000_000)
        p.read(8, width: 4)
        p.host(0)
        p.read(0, width: 2)
        p.write(0, 0x0100, width: 2)
        p.write(4, 1 << 10 | 1 << 13, width: 2)
        p.host(1)
        p.read(0, width: 4)
        p.write(5, (5 << 10 | 1 << 13) >> 8)
        return p.bytes
    }

    static func uart() -> [UInt8] {
        var p = DeviceProgramWriter()
        for (register, value) in [(3, 0x80), (0, 1), (1, 0), (3, 0x03), (2, 0xC7), (1, 0x0F), (4, 0x0B)] {
            p.write(UInt64(register), UInt64(value))
        }
        for byte in "hello\n".utf8 { p.write(0, UInt64(byte)) }
        p.read(5); p.read(2)
        p.host(0); p.raw(3, 1); p.raw("abc".utf8)
        for _ in 0..<4 { p.read(0); p.read(5) }
        p.write(4, 0x1B) // loopback
        p.write(0, 0x55); p.read(0); p.read(6)
        p.write(2, 0x06) // FIFO resets
        p.read(2)
        return p.bytes
    }

    static func pit() -> [UInt8] {
        var p = DeviceProgramWriter()
        p.write(3, 0x34); p.write(0, 0x9C); p.write(0, 0x2E) // channel 0, mode 2, 11932
        p.wait(1_000_000); p.wait(20_000_000)
        p.write(3, 0x00); p.read(0); p.read(0) // latch
        p.write(0x21, 0x01) // gate channel 2
        p.write(3, 0xB0); p.write(2, 0xFF); p.write(2, 0xFF) // channel 2, mode 0
        p.wait(5_000_000); p.read(0x21)
        p.write(3, 0xC2); p.read(0); p.read(0) // read-back of channel 0
        p.write(3, 0x36); p.write(0, 0x01); p.write(0, 0x00) // mode 3, tiny period
        p.wait(1_000_000, shift: 1)
        return p.bytes
    }

    static func rtc() -> [UInt8] {
        var p = DeviceProgramWriter()
        func set(_ register: UInt64, _ value: UInt64) { p.write(0, register); p.write(1, value) }
        func get(_ register: UInt64) { p.write(0, register); p.read(1) }
        set(UInt64(CMOSRegister.a), 0x23); set(UInt64(CMOSRegister.b), 0x72)
        p.wait(500_000); get(UInt64(CMOSRegister.c)); p.wait(1_000_000_000); get(UInt64(CMOSRegister.c))
        for register in 0..<10 as Range<UInt64> { get(register) }
        set(UInt64(CMOSRegister.b), 0x86) // SET, binary, 24 h
        set(0, 59); set(2, 59); set(4, 23); set(7, 31); set(8, 12); set(9, 99)
        set(UInt64(CMOSRegister.b), 0x06)
        p.wait(2_000_000_000, shift: 1); get(0); get(UInt64(CMOSRegister.c)); get(0x34)
        return p.bytes
    }

    static func fwCfg() -> [UInt8] {
        var p = DeviceProgramWriter()
        p.raw([0x02, 0x03])
        for key in [FwCfg.Key.signature, FwCfg.Key.id, FwCfg.Key.ramSize, FwCfg.Key.cpuCount, FwCfg.Key.maxRAM] {
            p.write(0, UInt64(key), width: 2)
            for _ in 0..<9 { p.read(1) }
        }
        p.host(0); p.raw([3, 0x20])
        return p.bytes
    }

    static func testDevice() -> [UInt8] {
        var p = DeviceProgramWriter()
        p.write(0, 0xDEAD_BEEF, width: 4); p.read(0, width: 4); p.read(2, width: 2)
        p.write(8, 0x5A); p.read(8)
        p.write(4, 0x1000, width: 4); p.write(4, 0x7FF_F000, width: 4)
        p.host(0); p.raw([4, 1]); p.host(0); p.raw([4, 0])
        return p.bytes
    }

    /// A driver's set-up of a network interface with the control queue, two receive buffers, a
    /// frame sent, two delivered (one too large for its buffer), an announcement and its ack.
    static func net() -> [UInt8] {
        var p = DeviceProgramWriter()
        func register(_ offset: UInt64, _ value: UInt32) { p.write(offset, UInt64(value), width: 4) }
        func store(_ address: UInt64, _ value: UInt64, width: Int) {
            p.host(0); p.raw(address, 4); p.raw(UInt64(DeviceOperation.widths.firstIndex(of: width)!), 1); p.raw(value, width)
        }
        func descriptor(_ queue: UInt64, _ index: UInt64, _ address: UInt64, _ length: UInt64, _ flags: UInt64, next: UInt64 = 0) {
            let entry = 0x10000 + queue * 0x1000 + index * 16
            store(entry, address, width: 8); store(entry + 8, length, width: 4); store(entry + 12, flags, width: 2); store(entry + 14, next, width: 2)
        }
        func publish(_ queue: UInt64, slot: UInt64, head: UInt64, index: UInt64) {
            store(0x10000 + queue * 0x1000 + 0x200 + 4 + 2 * slot, head, width: 2)
            store(0x10000 + queue * 0x1000 + 0x200 + 2, index, width: 2)
            register(VirtioMMIORegister.queueNotify, UInt32(queue))
        }
        let features = NetFeature.mac | NetFeature.status | NetFeature.controlQueue | NetFeature.guestAnnounce
        p.negotiate(UInt32(features))
        for queue: UInt64 in 0..<3 {
            let ring = 0x10000 + queue * 0x1000
            register(VirtioMMIORegister.queueSel, UInt32(queue))
            register(VirtioMMIORegister.queueNum, 8)
            register(VirtioMMIORegister.queueDescLow, UInt32(ring))
            register(VirtioMMIORegister.queueDriverLow, UInt32(ring + 0x200))
            register(VirtioMMIORegister.queueDeviceLow, UInt32(ring + 0x400))
            register(VirtioMMIORegister.queueReady, 1)
        }
        register(VirtioMMIORegister.status, VirtioStatus.acknowledge | VirtioStatus.driver | VirtioStatus.featuresOK | VirtioStatus.driverOK)
        p.read(VirtioMMIORegister.config, width: 4); p.read(VirtioMMIORegister.config + 6, width: 2)
        descriptor(0, 0, 0x20000, 1600, 2); descriptor(0, 1, 0x21000, 40, 2)
        publish(0, slot: 0, head: 0, index: 1); publish(0, slot: 1, head: 1, index: 2)
        store(0x30000 + 12, 0xFFFF_FFFF_FFFF, width: 8) // a broadcast frame of 60 bytes after the header
        descriptor(1, 0, 0x30000, 72, 0)
        publish(1, slot: 0, head: 0, index: 1)
        p.host(2)
        for length in [60, 100] { p.host(1); p.raw(UInt64(length), 2); p.raw([UInt8](repeating: 0x5A, count: length)) }
        p.host(3)
        store(0x40000, 3, width: 1); store(0x40001, 0, width: 1)
        descriptor(2, 0, 0x40000, 2, 1, next: 1); descriptor(2, 1, 0x40010, 1, 2)
        publish(2, slot: 0, head: 0, index: 1)
        p.host(4); p.raw([0])
        p.read(VirtioMMIORegister.interruptStatus, width: 4)
        register(VirtioMMIORegister.interruptACK, 3)
        return p.bytes
    }

    /// A driver's set-up of a disk, then a write, a read, a flush, GET_ID and a write-zeroes,
    /// each with the worker's turn after it.
    static func block() -> [UInt8] {
        var p = DeviceProgramWriter()
        func register(_ offset: UInt64, _ value: UInt32) { p.write(offset, UInt64(value), width: 4) }
        func store(_ address: UInt64, _ value: UInt64, width: Int) {
            p.host(0); p.raw(address, 4); p.raw(UInt64(DeviceOperation.widths.firstIndex(of: width)!), 1); p.raw(value, width)
        }
        let (desc, avail, used): (UInt64, UInt64, UInt64) = (0x10000, 0x10200, 0x10400)
        let features = BlockFeature.flush | BlockFeature.segmentMaximum | BlockFeature.writeZeroes | BlockFeature.discard
        p.negotiate(UInt32(features))
        register(VirtioMMIORegister.queueSel, 0)
        register(VirtioMMIORegister.queueNum, 8)
        register(VirtioMMIORegister.queueDescLow, UInt32(desc))
        register(VirtioMMIORegister.queueDriverLow, UInt32(avail))
        register(VirtioMMIORegister.queueDeviceLow, UInt32(used))
        register(VirtioMMIORegister.queueReady, 1)
        register(VirtioMMIORegister.status, VirtioStatus.acknowledge | VirtioStatus.driver | VirtioStatus.featuresOK | VirtioStatus.driverOK)
        p.read(VirtioMMIORegister.config, width: 8)
        // Request i: header at 0x20000 + 0x100 i, data at 0x30000, status at 0x21000 + i.
        for (index, (type, length, deviceWrites)) in [(BlockRequestType.write, 1024, false), (BlockRequestType.read, 1024, true),
                                                      (BlockRequestType.flush, 0, false), (BlockRequestType.getID, 20, true),
                                                      (BlockRequestType.writeZeroes, 16, false)].enumerated() {
            let header = 0x20000 + UInt64(index) * 0x100, status = 0x21000 + UInt64(index), slot = UInt64(index % 2) * 3
            store(header, UInt64(type), width: 4)
            store(header + 8, 2, width: 8)
            if type == BlockRequestType.writeZeroes {
                store(0x30000, 4, width: 8); store(0x30008, 2, width: 4); store(0x3000C, 1, width: 4)
            }
            let chain: [(UInt64, UInt64, UInt64)] = [(header, 16, 1)] + (length > 0 ? [(0x30000, UInt64(length), deviceWrites ? 3 : 1)] : [])
                + [(status, 1, 2)]
            for (offset, (address, size, flags)) in chain.enumerated() {
                let entry = desc + (slot + UInt64(offset)) * 16
                store(entry, address, width: 8)
                store(entry + 8, size, width: 4)
                store(entry + 12, offset == chain.count - 1 ? 2 : flags, width: 2)
                store(entry + 14, slot + UInt64(offset) + 1, width: 2)
            }
            store(avail + 4 + 2 * UInt64(index % 8), slot, width: 2)
            store(avail + 2, UInt64(index + 1), width: 2)
            register(VirtioMMIORegister.queueNotify, 0)
            p.host(1)
            p.read(VirtioMMIORegister.interruptStatus, width: 4)
            register(VirtioMMIORegister.interruptACK, 1)
        }
        p.host(2)
        return p.bytes
    }

    /// A driver's set-up of the balloon, then one inflate, one deflate and a statistics round.
    static func balloon(statsFirst: Bool) -> [UInt8] {
        var p = DeviceProgramWriter()
        func register(_ offset: UInt64, _ value: UInt32) { p.write(offset, UInt64(value), width: 4) }
        func store(_ address: UInt64, _ value: UInt64, width: Int) {
            p.host(0); p.raw(address, 4); p.raw(UInt64(DeviceOperation.widths.firstIndex(of: width)!), 1); p.raw(value, width)
        }
        let rings: [(desc: UInt64, avail: UInt64, used: UInt64)] = (0..<3).map { (queue: UInt64) in
            let base: UInt64 = 0x10000 + queue * 0x1000
            return (base, base + 0x200, base + 0x400)
        }
        p.negotiate(UInt32(BalloonFeature.statsQueue | BalloonFeature.mustTellHost | BalloonFeature.deflateOnOOM))
        for (queue, r) in rings.enumerated() {
            register(VirtioMMIORegister.queueSel, UInt32(queue))
            register(VirtioMMIORegister.queueNum, 8)
            register(VirtioMMIORegister.queueDescLow, UInt32(r.desc))
            register(VirtioMMIORegister.queueDriverLow, UInt32(r.avail))
            register(VirtioMMIORegister.queueDeviceLow, UInt32(r.used))
            register(VirtioMMIORegister.queueReady, 1)
        }
        register(VirtioMMIORegister.status, VirtioStatus.acknowledge | VirtioStatus.driver | VirtioStatus.featuresOK | VirtioStatus.driverOK)
        p.host(1); p.raw(16, 4)
        p.read(VirtioMMIORegister.config, width: 4)
        func submit(queue: Int, buffer: UInt64, length: UInt32, deviceWrites: Bool) {
            store(rings[queue].desc, buffer, width: 8)
            store(rings[queue].desc + 8, UInt64(length), width: 4)
            store(rings[queue].desc + 12, deviceWrites ? 2 : 0, width: 2)
            store(rings[queue].avail + 4, 0, width: 2)
            store(rings[queue].avail + 2, 1, width: 2)
            register(VirtioMMIORegister.queueNotify, UInt32(queue))
        }
        if statsFirst {
            for (index, tag) in [4, 5, 7].enumerated() { // free, total, available memory
                store(0x30000 + UInt64(index) * 10, UInt64(tag), width: 2)
                store(0x30002 + UInt64(index) * 10, 0x40_0000 >> UInt64(index), width: 8)
            }
            submit(queue: 2, buffer: 0x30000, length: 30, deviceWrites: false)
            p.wait(1_000_000_000); p.wait(1_000_000_000)
        }
        for index in 0..<16 { store(0x20000 + UInt64(index) * 4, 0x40 + UInt64(index), width: 4) }
        submit(queue: 0, buffer: 0x20000, length: 64, deviceWrites: false)
        register(VirtioMMIORegister.config + 4, 16)
        p.read(VirtioMMIORegister.interruptStatus, width: 4)
        register(VirtioMMIORegister.interruptACK, 1)
        p.host(1); p.raw(0, 4)
        submit(queue: 1, buffer: 0x20000, length: 32, deviceWrites: false)
        p.host(2)
        p.wait(2_000_000_000)
        return p.bytes
    }

    static func gdb() -> [UInt8] {
        let packets = ["qSupported:multiprocess+;swbreak+;hwbreak+", "?", "Hg0", "g", "qfThreadInfo", "qsThreadInfo",
                       "m100000,40", "M100000,4:deadbeef", "Z0,100000,1", "z0,100000,1", "Z1,100010,1", "P10=0000100000000000",
                       "p10", "vCont?", "vCont;s:1", "vCont;c", "s", "c", "qXfer:features:read:target.xml:0,fff", "D"]
        var bytes: [UInt8] = Array("+".utf8)
        for packet in packets { bytes += GDBPacket.frame(packet) + Array("+".utf8) }
        return bytes + [0x03] + Array("$g#00".utf8) // an interrupt and a bad checksum
    }

    static let commandLines = """
        status
        memory
        stats
        balloon 64M
        balloon 0
        pause
        resume
        stop
        help
        b main
        hb 0x100000
        break-exit io:0x3f8
        d 1
        info breakpoints
        x/16xg 0x100000
        x/4i $rip
        s 3
        si
        c
        regs
        sregs
        set rax 0x1234
        vcpu 1
        io:0x3f8-0x3ff,mmio,hlt
        all,-io:0x80
        q
        run image --size 64 --module a --module=b --stats --trace -- console=ttyS0
        run --trace=io --size=0x10 image
        control unix:/tmp/s balloon --size 1
        control /tmp/s --json pin 0 0,2-3
        pin 1 0-8191
        pin 0 3-1,,
        help run
        --version
        """

    static let hostConfig = """
        {
          "period": 1, "placement": "load-aware", "memoryPolicy": "coordinator", "statsInterval": 0.5,
          "coordinator": { "lowWatermark": "16M", "highWatermark": "64M", "floor": "32M", "step": "16M" },
          "vms": [
            { "name": "vm1", "image": "cpuburn.elf", "memory": "32M", "cmdline": "duty=35", "affinity": [[0]] },
            { "name": "vm2", "image": "memhog.elf", "memory": "1G", "cpus": 2, "balloon": true, "balloonTarget": "512M",
              "cmdline": "phases=touch:600M@60M,hold:3", "serial": "file:vm2.log" }
          ]
        }
        """

    /// A bzImage as small as the loader takes: a boot-protocol 2.15 setup header (64-bit entry,
    /// loaded high, relocatable) and 4 KiB of protected-mode code.
    static func bzImage() -> [UInt8] {
        var image = [UInt8](repeating: 0, count: 5 * 512 + 4096)
        func put(_ value: UInt64, at offset: Int, _ size: Int) {
            for index in 0..<size { image[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(index))) }
        }
        put(4, at: 0x1F1, 1) // setup_sects
        put(4096 / 16, at: 0x1F4, 4) // syssize
        put(0xAA55, at: 0x1FE, 2)
        put(0x6A, at: 0x201, 1) // jump offset: the header's end
        image.replaceSubrange(0x202..<0x206, with: Array("HdrS".utf8))
        put(0x020F, at: 0x206, 2)
        put(0x01, at: 0x211, 1) // LOADED_HIGH
        put(0x7FFF_FFFF, at: 0x22C, 4)
        put(0x20_0000, at: 0x230, 4)
        put(1, at: 0x234, 1)
        put(0x1, at: 0x236, 2) // XLF_KERNEL_64
        put(2048, at: 0x238, 4)
        put(0x100_0000, at: 0x258, 8)
        put(0x40_0000, at: 0x260, 4)
        return image
    }
}

extension DeviceProgramWriter {
    /// A virtio driver's start: reset, ACKNOWLEDGE and DRIVER, `features` (low word) with
    /// VERSION_1, FEATURES_OK.
    mutating func negotiate(_ features: UInt32) {
        write(VirtioMMIORegister.status, 0, width: 4)
        write(VirtioMMIORegister.status, UInt64(VirtioStatus.acknowledge | VirtioStatus.driver), width: 4)
        write(VirtioMMIORegister.driverFeaturesSel, 0, width: 4)
        write(VirtioMMIORegister.driverFeatures, UInt64(features), width: 4)
        write(VirtioMMIORegister.driverFeaturesSel, 1, width: 4)
        write(VirtioMMIORegister.driverFeatures, 1, width: 4)
        write(VirtioMMIORegister.status, UInt64(VirtioStatus.acknowledge | VirtioStatus.driver | VirtioStatus.featuresOK), width: 4)
    }
}
