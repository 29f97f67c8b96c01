import Devices
import Foundation
import Glibc
import VMMCore

/// The file hypercall device as a hostile guest drives it: an input is a program of stores into
/// 64 KiB of guest RAM (paths, parameter blocks, buffers) and doorbell rings through the MMIO
/// window or the ports, served from a fresh share in a temporary directory. Beside the share is
/// a directory the guest must never reach, and the share holds links into it: after every input
/// the target checks that the outside directory is exactly as it was (a change is a finding, as a
/// crash is).
///   op 0: store: u16 address, u8 length, that many bytes.
///   op 1: ring: u8 call (bit 7: through the port), u16 block address.
///   op 2: ring with a raw 64-bit block address: u8 call, u64 address.
enum ShareTarget {
    static let memorySize = 64 << 10
    static let maximumRings = 64

    /// Returns how many calls the device served, and how many succeeded (the tests check that the
    /// seed reaches deep).
    @discardableResult
    static func calls(_ data: [UInt8]) -> (served: UInt64, succeeded: UInt64) {
        let root = NSTemporaryDirectory() + "swiftvmm-fuzz-share-\(getpid())"
        let share = root + "/share", outside = root + "/outside"
        let files = FileManager.default
        try? files.removeItem(atPath: root)
        try! files.createDirectory(atPath: share, withIntermediateDirectories: true)
        try! files.createDirectory(atPath: outside, withIntermediateDirectories: true)
        try! "secret".write(toFile: outside + "/secret", atomically: false, encoding: .utf8)
        try! "inside".write(toFile: share + "/file", atomically: false, encoding: .utf8)
        try! files.createDirectory(atPath: share + "/dir", withIntermediateDirectories: true)
        try! files.createSymbolicLink(atPath: share + "/out", withDestinationPath: "../outside/secret")
        try! files.createSymbolicLink(atPath: share + "/outdir", withDestinationPath: outside)
        defer { try? files.removeItem(atPath: root) }
        let memory = try! GuestMemory(ranges: [(start: 0, size: memorySize)])
        let device = ShareDevice(share: try! ShareDirectory(path: share, readOnly: data.first.map { $0 & 1 == 1 } ?? false, maxOpenFiles: 16),
                                 memory: memory, clock: FuzzClock(), wallClock: FuzzClock())
        let window = device.window, ports = device.ports
        var input = FuzzInput(Array(data.dropFirst()))
        var rings = 0
        while !input.isAtEnd, rings < maximumRings {
            switch input.byte() % 3 {
            case 0:
                let address = input.little(2), length = Int(input.byte())
                try? memory.write(Array(input.take(length)), at: address)
            case 1:
                let call = input.byte(), block = input.little(2)
                ring(call, block, window: window, ports: ports)
                rings += 1
            default:
                let call = input.byte(), block = input.little(8)
                ring(call, block, window: window, ports: ports)
                rings += 1
            }
        }
        let listing = (try? files.contentsOfDirectory(atPath: outside)) ?? []
        let secret = try? String(contentsOfFile: outside + "/secret", encoding: .utf8)
        guard listing == ["secret"], secret == "secret", (try? files.contentsOfDirectory(atPath: root).sorted()) == ["outside", "share"] else {
            fatalError("the share reached outside its directory: outside now holds \(listing), secret reads \(secret ?? "nothing")")
        }
        let counts = Hypercall.allCases.map { device.statistics.count($0) }
        return (counts.reduce(0) { $0 + $1.calls }, counts.reduce(0) { $0 + $1.calls - $1.errors })
    }

    private static func ring(_ call: UInt8, _ block: UInt64, window: any BusDevice, ports: any BusDevice) {
        let number = UInt64(call & 0x7F)
        if call & 0x80 != 0 {
            ports.write(offset: number % Hypercall.portCount, size: 4, value: block & 0xFFFF_FFFF)
        } else {
            window.write(offset: Hypercall.Window.doorbellOffset + 8 * (number % 0x1E0), size: 8, value: block)
        }
    }

    /// What a well-behaved guest does: make a directory, create and write a file, read it back,
    /// list the root, rename and remove; then the escapes a hostile one tries.
    static func seed() -> [UInt8] {
        var bytes: [UInt8] = [0]
        func store(_ address: UInt16, _ data: [UInt8]) {
            bytes += [0] + LittleEndian.bytes(address) + [UInt8(data.count)] + data
        }
        func block(_ call: Hypercall, _ arguments: [UInt64], port: Bool = false) {
            var block = [UInt8](repeating: 0, count: 8)
            for argument in arguments { block += LittleEndian.bytes(argument) }
            while block.count < Hypercall.blockSize { block.append(0) }
            store(0x100, block)
            bytes += [1, call.rawValue | (port ? 0x80 : 0)] + LittleEndian.bytes(UInt16(0x100))
        }
        func path(_ text: String, at address: UInt16) { store(address, Array(text.utf8) + [0]) }
        path("dir/new", at: 0x400); path("dir", at: 0x500); path("dir/renamed", at: 0x600)
        path("../outside/secret", at: 0x700); path("out", at: 0x800); path("outdir/x", at: 0x900)
        store(0x2000, Array("written by the seed".utf8))
        path("dir/sub", at: 0xA00)
        block(.mkdir, [0xA00, 0o755])
        block(.open, [0x400, 0o102, 0o644])                  // O_CREAT | O_RDWR: descriptor 3
        block(.write, [3, 0x2000, 19])
        block(.pread, [3, 0x3000, 64, 0], port: true)
        block(.fstat, [3, 0x4000])
        block(.lseek, [3, 0, 2])
        block(.close, [3])
        block(.open, [0x500, 0o200000, 0])                   // the directory: descriptor 3 again
        block(.getdents, [3, 0x5000, 2048])
        block(.close, [3])
        block(.rename, [0x400, 0x600])
        block(.unlink, [0x600])
        block(.open, [0x700, 0, 0]); block(.open, [0x800, 0, 0]); block(.open, [0x900, 0o101, 0o644])
        block(.stat, [0x800, 0x4000])
        block(.clockGettime, [1, 0x4200])
        block(.chdir, [0x500])
        block(.getcwd, [0x4100, 64])
        bytes += [2, Hypercall.read.rawValue] + LittleEndian.bytes(UInt64(1) << 40)
        return bytes
    }
}
