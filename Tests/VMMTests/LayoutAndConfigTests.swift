@testable import Boot
import Synchronization
import KVM
import Testing
import VMMCore
import HostMode
import Foundation
import Glibc
@testable import VMM

@Suite struct LayoutTests {
    @Test func ramBelowTheHoleThenAboveFourGiB() {
        #expect(Layout.ramRanges(size: 128 * Layout.mib).map(\.size) == [128 * Layout.mib])
        let large = Layout.ramRanges(size: 5 * Layout.gib)
        #expect(large.map(\.start) == [0, 4 * Layout.gib])
        #expect(large.map(\.size) == [3 * Layout.gib, 2 * Layout.gib])
        #expect(Layout.ramTop(size: 5 * Layout.gib) == 6 * Layout.gib)
        #expect(Layout.identityMappedGiB(size: 128 * Layout.mib) == 4)
        #expect(Layout.identityMappedGiB(size: 5 * Layout.gib) == 6)
    }

    @Test func bootStructuresAreOrderedAndFitBelowOneMiB() {
        let tablesEnd = BootState.longModeTablesEnd(ramSize: Layout.maximumRAM)
        #expect(Layout.bootGDT < Layout.bootTSS && Layout.bootTSS + 0x68 <= Layout.pml4)
        #expect(tablesEnd <= Layout.bootInfo)
        #expect(Layout.bootInfoEnd <= Layout.stackTop - UInt64(Layout.entryStacks) * Layout.stackSize)
        #expect(Layout.stackTop <= Layout.lowReservedEnd)
        #expect(Layout.commandLine + UInt64(Layout.commandLineMax) <= Layout.bootInfoEnd)
        #expect(Layout.vmxTSS >= Layout.mmioHoleStart && Layout.vmxTSS + 3 * 4096 <= Layout.mmioHoleEnd)
    }
}

@Suite struct ByteSizeTests {
    @Test(arguments: [("128M", UInt64(128) << 20), ("2g", UInt64(2) << 30), ("4096", 4096), ("512K", 512 << 10),
                      ("1GiB", 1 << 30), ("64MB", 64 << 20), ("0", 0)])
    func parsesSizes(text: String, bytes: UInt64) {
        #expect(ByteSize(parsing: text)?.bytes == bytes)
    }

    @Test(arguments: ["1X", "", "M", "-1", "12.5M", "99999999999999999999", "16777216T", "0x10"])
    func rejectsMalformedSizes(text: String) {
        #expect(ByteSize(parsing: text) == nil)
    }

    @Test func printsCompactly() {
        #expect(ByteSize(bytes: 128 << 20).description == "128M")
        #expect(ByteSize(bytes: 1000).description == "1000")
    }
}

@Suite struct ConfigTests {
    func config(_ change: (inout VMConfig) -> Void) -> VMConfig {
        var config = VMConfig(imagePath: "x")
        change(&config)
        return config
    }

    @Test func acceptsDefaults() throws {
        try VMConfig(imagePath: "x").validate()
        #expect(VMConfig(imagePath: "x").effectiveLoadAddress == 0x100000)
        #expect(config { $0.entry = .real }.effectiveLoadAddress == 0x1000)
    }

    @Test func rejectsOutOfRangeValues() {
        #expect(throws: VMMError.self) { try config { $0.memorySize = 0 }.validate() }
        #expect(throws: VMMError.self) { try config { $0.memorySize = 65 * Layout.gib }.validate() }
        #expect(throws: VMMError.self) { try config { $0.memorySize = 4 * Layout.mib + 1 }.validate() }
        #expect(throws: VMMError.self) { try config { $0.cpus = 0 }.validate() }
        #expect(throws: VMMError.self) { try config { $0.cpus = 65 }.validate() }
        #expect(throws: VMMError.self) { try config { $0.commandLine = String(repeating: "a", count: 4000) }.validate() }
        #expect(throws: VMMError.self) { try config { $0.entry = .real; $0.loadAddress = 0x10000 }.validate() }
        #expect(throws: VMMError.self) { try config { $0.entry = .real; $0.cpus = 2 }.validate() }
    }

    @Test func errorsMapToDocumentedExitCodes() {
        #expect(VMMError.invalidConfig("x").exitCode == 64)
        #expect(VMMError.image(path: "p", .badMagic).exitCode == 66)
        #expect(VMMError.imageUnreadable(path: "p", reason: "r").exitCode == 66)
        #expect(VMMError.kvmUnavailable(.missingCapability("KVM_CAP_X")).exitCode == 68)
        #expect(VMMError.kvmUnavailable(.missingCapability("KVM_CAP_X")).description == "KVM lacks the required capability KVM_CAP_X")
        #expect(VMMError.kvm(KVMError("KVM_RUN", errno: 22)).exitCode == 70)
    }

    @Test func serialTargetsParse() {
        #expect(SerialTarget(parsing: "stdio") == .stdio)
        #expect(SerialTarget(parsing: "none") == SerialTarget.none)
        #expect(SerialTarget(parsing: "file:/tmp/x") == .file("/tmp/x"))
        #expect(SerialTarget(parsing: "file:") == nil)
        #expect(SerialTarget(parsing: "tcp:1") == nil)
    }
}

@Suite struct RunOutcomeTests {
    @Test func exitCodesAreDistinct() {
        let outcomes: [RunOutcome] = [
            .halted, .debugExit(status: 0x43),
            .guestFailure(.tripleFault, vcpu: 0, detail: "", registers: ""),
            .guestFailure(.internalError, vcpu: 0, detail: "", registers: ""),
            .guestFailure(.failedEntry, vcpu: 0, detail: "", registers: ""),
            .guestFailure(.unhandledExit, vcpu: 0, detail: "", registers: ""),
            .vmmFailure("x"), .signal(2),
        ]
        let codes = outcomes.map(\.exitCode)
        #expect(codes == [0, 0x43, 80, 82, 84, 86, 70, 130])
        #expect(RunOutcome.debugExit(status: 0x1FF).exitCode == 0xFF)
    }

    @Test func firstOutcomeWinsAndKicksOnce() {
        let control = RunControl(vcpuCount: 2)
        let kicks = Mutex(0)
        control.setKick { kicks.withLock { $0 += 1 } }
        control.vcpuHalted()
        #expect(!control.isStopping)
        control.finish(.debugExit(status: 3))
        control.finish(.signal(15))
        control.vcpuHalted()
        #expect(control.result == .debugExit(status: 3))
        #expect(kicks.withLock { $0 } == 1)
    }

    @Test func allVCPUsHaltingEndsTheRun() {
        let control = RunControl(vcpuCount: 2)
        control.vcpuHalted()
        control.vcpuHalted()
        #expect(control.result == .halted)
    }
}

@Suite struct BalloonControlTests {
    @Test func linuxCommandLineFormMatchesTheLayout() {
        #expect(BalloonControl.linuxCommandLine == "virtio_mmio.device=512@0xc0000000:5")
    }
}

/// The steal-time record as the VMM reads it from guest memory: only when the guest enabled it,
/// only inside RAM, never a torn value.
@Suite struct StealTimeRecordTests {
    @Test func readsAWholeRecordOnly() throws {
        let memory = try GuestMemory(ranges: [(start: 0, size: 1 << 20)])
        try memory.store(UInt64(123_456_789), at: 0x1000)
        try memory.store(UInt32(4), at: 0x1008)
        #expect(StealTimeRecord.steal(msr: 0x1000 | 1, memory: memory) == 123_456_789)
        #expect(StealTimeRecord.steal(msr: 0x1000, memory: memory) == nil, "not enabled")
        #expect(StealTimeRecord.steal(msr: 0x1010 | 1, memory: memory) == 123_456_789, "the low 6 bits are flags, not address")
        #expect(StealTimeRecord.steal(msr: (2 << 20) | 1, memory: memory) == nil, "outside RAM")
        #expect(StealTimeRecord.steal(msr: UInt64.max, memory: memory) == nil)
        try memory.store(UInt32(5), at: 0x1008) // KVM is in the middle of an update
        #expect(StealTimeRecord.steal(msr: 0x1000 | 1, memory: memory) == nil)
    }
}

@Suite struct HostConfigPageSharingTests {
    /// `pageSharing` for all VMs, and a VM's own setting over it.
    @Test func aVMsOwnSettingWinsOverTheConfigs() throws {
        let path = NSTemporaryDirectory() + "sharing-\(getpid()).json"
        try #"{"pageSharing": true, "vms": [{"name": "a", "image": "/x", "memory": "16M"}, {"name": "b", "image": "/x", "memory": "16M", "pageSharing": false}]}"#
            .write(toFile: path, atomically: true, encoding: .utf8)
        defer { unlink(path) }
        let config = try HostConfig.load(path: path)
        #expect(try config.machineConfig(config.vms[0]).pageSharing)
        #expect(try !config.machineConfig(config.vms[1]).pageSharing)
        #expect(try !config.machineConfig(config.vms[0]).announcePageSharing, "host mode says it once, not per VM")
    }
}
