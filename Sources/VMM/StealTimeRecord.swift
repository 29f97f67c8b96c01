import VMMCore

/// KVM's steal-time record for one vCPU (KVM_FEATURE_STEAL_TIME): 64 bytes in guest RAM at the
/// address the guest wrote to MSR_KVM_STEAL_TIME, where the host kernel adds the time the vCPU
/// thread was runnable but not running. Read from guest memory, so the value is the guest's to
/// spoil: it is a figure to show, never used in arithmetic that could trap or size anything.
public enum StealTimeRecord {
    public static let msr: UInt32 = 0x4b56_4d03
    static let enabled: UInt64 = 1
    static let addressMask: UInt64 = ~0x3F

    /// Nanoseconds of steal the record at `msr` (the MSR's value) holds; nil when the guest has
    /// not enabled one, the address is outside RAM, or KVM was updating it every time we looked.
    public static func steal(msr value: UInt64, memory: GuestMemory) -> UInt64? {
        guard value & enabled != 0 else { return nil }
        let address = value & addressMask
        for _ in 0..<8 {
            // The host updates under an odd version: a read between two equal even versions is whole.
            guard let before = try? memory.load(UInt32.self, at: address &+ 8),
                  let steal = try? memory.load(UInt64.self, at: address),
                  let after = try? memory.load(UInt32.self, at: address &+ 8) else { return nil }
            if before & 1 == 0 && before == after { return steal }
        }
        return nil
    }
}
