import Testing
@testable import Coordinator

let mib: UInt64 = 1 << 20

@Suite struct MemoryCoordinatorTests {
    let coordinator = MemoryCoordinator(settings: CoordinatorSettings(lowWatermark: 96 * mib, highWatermark: 192 * mib,
                                                                      floor: 128 * mib, step: 64 * mib, hostReserve: 1024 * mib))
    let plenty: UInt64 = 16 << 30

    func vm(_ name: String, balloon: UInt64, free: UInt64?) -> VMMemorySample {
        VMMemorySample(name: name, maximumBytes: 1024 * mib, balloonBytes: balloon * mib, unusedBytes: free.map { $0 * mib })
    }

    @Test func growsTheVMThatRunsShortAndTakesFromIdleOnes() {
        let vms = [vm("vm1", balloon: 512, free: 40), vm("vm2", balloon: 512, free: 480), vm("vm3", balloon: 512, free: 200)]
        let targets = coordinator.decide(vms, hostAvailableBytes: plenty)
        #expect(targets[0] == 448 * mib) // balloon shrinks by one step: vm1 gains 64 MiB (of the 152 it wants)
        #expect(targets[1] == 576 * mib) // idle vm2 gives one step back
        #expect(targets[2] == 520 * mib) // vm3 is 8 MiB above the high watermark: gives 8 MiB
    }

    @Test func neverSqueezesBelowUsedPlusFloor() {
        // 300 MiB actual, 250 free: used 50, keep 50 + 128 = 178, so at most 122 could go; the step caps at 58 (free - high).
        let vms = [VMMemorySample(name: "a", maximumBytes: 1024 * mib, balloonBytes: 724 * mib, unusedBytes: 250 * mib)]
        #expect(coordinator.decide(vms, hostAvailableBytes: plenty)[0] == 782 * mib)
        // 200 MiB actual, 195 free: used 5, so it keeps 133 and could give 67 MiB; free - high is 3 MiB: that wins.
        let tight = [VMMemorySample(name: "b", maximumBytes: 1024 * mib, balloonBytes: 824 * mib, unusedBytes: 195 * mib)]
        #expect(coordinator.decide(tight, hostAvailableBytes: plenty)[0] == 827 * mib)
        // 150 MiB actual, 145 free: used 5, keeps 133: gives at most 17, and free - high < 0: nothing.
        let small = [VMMemorySample(name: "c", maximumBytes: 1024 * mib, balloonBytes: 874 * mib, unusedBytes: 145 * mib)]
        #expect(coordinator.decide(small, hostAvailableBytes: plenty).isEmpty)
    }

    @Test func growthIsLimitedByWhatTheHostCanSpare() {
        let vms = [vm("vm1", balloon: 512, free: 10), vm("vm2", balloon: 512, free: 20)]
        // The host has 1040 MiB available and keeps 1024: 16 MiB to hand out, to the shortest first.
        let targets = coordinator.decide(vms, hostAvailableBytes: 1040 * mib)
        #expect(targets[0] == 496 * mib)
        #expect(targets[1] == nil)
        #expect(coordinator.decide(vms, hostAvailableBytes: 512 * mib).isEmpty)
    }

    @Test func donorsFundNeedyVMsEvenWithoutHostSpare() {
        let vms = [vm("busy", balloon: 512, free: 10), vm("idle", balloon: 0, free: 900)]
        let targets = coordinator.decide(vms, hostAvailableBytes: 0)
        #expect(targets[1] == 64 * mib && targets[0] == 448 * mib)
    }

    @Test func sharedPagesADonorGivesUpFreeNothingForTheHost() {
        // The idle VM gives 64 MiB, but three quarters of its resident RAM is KSM-shared with
        // other VMs: ballooning a shared page frees nothing while the others keep it, so only
        // 16 MiB of the gift reaches the host, and the needy VM grows by that much.
        var idle = vm("idle", balloon: 0, free: 900)
        idle.sharedBytes = 600 * mib
        idle.privateBytes = 200 * mib
        #expect(idle.hostGain(of: 64 * mib) == 16 * mib)
        let targets = coordinator.decide([vm("busy", balloon: 512, free: 10), idle], hostAvailableBytes: 0)
        #expect(targets[1] == 64 * mib && targets[0] == 496 * mib, "\(targets)")
        // Without page sharing (nil) or nothing shared, all of it counts.
        #expect(vm("x", balloon: 0, free: 0).hostGain(of: 64 * mib) == 64 * mib)
        var unshared = vm("y", balloon: 0, free: 0)
        (unshared.sharedBytes, unshared.privateBytes) = (0, 300 * mib)
        #expect(unshared.hostGain(of: 64 * mib) == 64 * mib)
        // The report line carries Shared only with page sharing.
        #expect(idle.line == "Memory (VM: idle) Actual [1024.0], Unused: [900.0], Shared: [600.0]")
        #expect(vm("z", balloon: 0, free: nil).line == "Memory (VM: z) Actual [1024.0], Unused: [?]")
    }

    @Test func leavesVMsWithoutStatisticsOrWithinWatermarksAlone() {
        let vms = [vm("new", balloon: 512, free: nil), vm("steady", balloon: 256, free: 150)]
        #expect(coordinator.decide(vms, hostAvailableBytes: plenty).isEmpty)
    }

    @Test func reportLineInTheScenarioFormat() {
        #expect(vm("vm1", balloon: 512, free: 257).line == "Memory (VM: vm1) Actual [512.0], Unused: [257.0]")
        #expect(VMMemorySample(name: "x", maximumBytes: 1024 * mib, balloonBytes: 0, unusedBytes: nil).line
                == "Memory (VM: x) Actual [1024.0], Unused: [?]")
        #expect(hostMemoryAvailable(meminfo: "MemTotal: 100 kB\nMemAvailable:   2048 kB\n") == 2 * mib)
    }
}

@Suite struct TopUpTests {
    @Test func needyVMsAreToppedUpTowardsTheHighWatermarkWithinTheStep() {
        let coordinator = MemoryCoordinator(settings: CoordinatorSettings(step: 128 * mib))
        let vms = [VMMemorySample(name: "a", maximumBytes: 1024 * mib, balloonBytes: 512 * mib, unusedBytes: 90 * mib),
                   VMMemorySample(name: "b", maximumBytes: 1024 * mib, balloonBytes: 512 * mib, unusedBytes: 10 * mib)]
        let targets = coordinator.decide(vms, hostAvailableBytes: 16 << 30)
        #expect(targets[0] == 410 * mib) // wants 192 - 90 = 102 MiB: less than a step
        #expect(targets[1] == 384 * mib) // wants 182 MiB: one 128 MiB step
    }
}
