import Foundation
import Testing
@testable import KVM

@Suite(.enabled(if: access("/dev/kvm", R_OK | W_OK) == 0 || ProcessInfo.processInfo.environment["CI"] == "true",
                "needs a usable /dev/kvm (always runs, and fails, when CI=true)"))
struct KVMSystemTests {
    @Test func opensAndReportsTheRequiredCapabilities() throws {
        let kvm = try KVMSystem()
        try kvm.require(KVMCapability.required)
        #expect(kvm.vcpuMmapSize >= 4096)
        let cpuid = try kvm.supportedCPUID()
        #expect(cpuid.contains { $0.function == 0 })
    }

    @Test func aMissingCapabilityIsNamed() throws {
        let kvm = try KVMSystem()
        let bogus = KVMCapability(name: "KVM_CAP_FROM_THE_FUTURE", number: 99_999)
        #expect(throws: KVMOpenError.missingCapability("KVM_CAP_FROM_THE_FUTURE")) {
            try kvm.require(KVMCapability.required + [bogus])
        }
    }

    @Test func vcpuRegistersRoundTrip() throws {
        let vm = try KVMSystem().createVM()
        let vcpu = try vm.createVCPU(id: 0)
        var regs = try vcpu.registers()
        regs.rip = 0x1234
        regs.rbx = 0xDEAD_BEEF
        try vcpu.setRegisters(regs)
        #expect(try vcpu.registers().rip == 0x1234)
        #expect(try vcpu.registers().rbx == 0xDEAD_BEEF)
        let sregs = try vcpu.specialRegisters()
        try vcpu.setSpecialRegisters(sregs)
        #expect(try vcpu.specialRegisters() == sregs)
    }
}
