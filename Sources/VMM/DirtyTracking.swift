import KVM
import VMMCore

/// Who wants to know which pages of guest RAM changed: a migration, and diff snapshots. Each
/// consumer sees every page written since it last took its set. KVM's log (the guest's writes) and
/// the VMM's own record (its devices' writes) are read once and handed to all consumers, so one
/// collecting never hides a page from another; logging is on while any consumer is.
final class DirtyTracking: Sendable {
    private let vm: VirtualMachine
    private let memory: GuestMemory
    /// Each consumer's pages so far: one bitmap of 64-page words per region.
    private let consumers = Locked<[String: [[UInt64]]]>([:])

    init(vm: VirtualMachine, memory: GuestMemory) {
        self.vm = vm
        self.memory = memory
    }

    var isLogging: Bool { consumers.withLock { !$0.isEmpty } }

    /// Adds `consumer`; the first turns logging on. Its set starts empty now.
    func start(_ consumer: String) throws(KVMError) {
        try consumers.withLock { (all: inout [String: [[UInt64]]]) throws(KVMError) in
            if all.isEmpty {
                memory.startTrackingWrites()
                do throws(KVMError) { try setLogging(true) } catch {
                    memory.stopTrackingWrites()
                    throw error
                }
            } else {
                collect(into: &all) // what others have not taken yet stays theirs
            }
            all[consumer] = emptySet()
        }
    }

    /// The pages written since `consumer` last took them (or started), and a fresh start.
    func take(_ consumer: String) throws(KVMError) -> [[UInt64]] {
        try consumers.withLock { (all: inout [String: [[UInt64]]]) throws(KVMError) -> [[UInt64]] in
            guard all[consumer] != nil else { return emptySet() }
            try collectChecked(into: &all)
            defer { all[consumer] = emptySet() }
            return all[consumer]!
        }
    }

    /// Removes `consumer`; the last turns logging off.
    func stop(_ consumer: String) {
        consumers.withLock { all in
            guard all.removeValue(forKey: consumer) != nil, all.isEmpty else { return }
            try? setLogging(false)
            memory.stopTrackingWrites()
        }
    }

    private func emptySet() -> [[UInt64]] {
        memory.regions.map { [UInt64](repeating: 0, count: ($0.size / memory.pageSize + 63) / 64) }
    }

    private func collect(into all: inout [String: [[UInt64]]]) { try? collectChecked(into: &all) }

    /// Reads KVM's log of every slot and the VMM's record once, and ORs both into every consumer.
    private func collectChecked(into all: inout [String: [[UInt64]]]) throws(KVMError) {
        var fresh = memory.takeWrittenPages()
        for (slot, region) in memory.regions.enumerated() {
            let log = try vm.dirtyLog(slot: UInt32(slot), pages: region.size / memory.pageSize)
            if slot >= fresh.count { fresh.append(log) } else {
                for word in log.indices where word < fresh[slot].count { fresh[slot][word] |= log[word] }
            }
        }
        for name in Array(all.keys) {
            for (region, words) in fresh.enumerated() where region < all[name]!.count {
                for word in words.indices where words[word] != 0 && word < all[name]![region].count { all[name]![region][word] |= words[word] }
            }
        }
    }

    private func setLogging(_ on: Bool) throws(KVMError) {
        for (slot, region) in memory.regions.enumerated() {
            try vm.setUserMemoryRegion(slot: UInt32(slot), guestAddress: region.guestStart, size: UInt64(region.size),
                                       hostAddress: region.hostAddress, logDirty: on)
        }
    }
}
