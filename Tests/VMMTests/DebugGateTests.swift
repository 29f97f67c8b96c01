@testable import Boot
import Host
import Glibc
import Synchronization
import Testing
@testable import VMM
import Sandbox

/// The all-stop protocol without KVM: two fake vCPU threads park and resume as VCPURunner does.
@Suite struct DebugGateTests {
    /// A fake vCPU: parks when the gate holds, otherwise "runs" one step per loop; `script` says
    /// which event it meets after being released with a given plan.
    final class FakeVCPU: @unchecked Sendable {
        let index: Int
        let gate: DebugGate
        let plans = Mutex<[ResumePlan]>([])
        let event: (ResumePlan) -> StopReason?

        init(index: Int, gate: DebugGate, event: @escaping (ResumePlan) -> StopReason?) {
            self.index = index
            self.gate = gate
            self.event = event
        }

        func run() {
            var plan = gate.park(vcpu: index, reason: .requested)
            while true {
                plans.withLock { $0.append(plan) }
                if plan == ResumePlan(mode: .run, exitBreakpoints: [.init(family: "end")]) { break }
                if let reason = event(plan) {
                    plan = gate.park(vcpu: index, reason: reason)
                    continue
                }
                while !gate.isHolding { usleep(100) } // "running" until kicked
                plan = gate.park(vcpu: index, reason: .requested)
            }
            gate.vcpuFinished(index)
        }
    }

    @Test func stopsAllStepsOneAndReportsTheFirstEvent() throws {
        let gate = DebugGate(vcpuCount: 2)
        gate.setKick {}
        let stepper = FakeVCPU(index: 0, gate: gate) { $0.mode == .stepInstruction ? .singleStep : nil }
        let hitter = FakeVCPU(index: 1, gate: gate) { $0.mode == .run ? .softwareBreakpoint(address: 0x1000) : nil }
        let threads = try [stepper, hitter].map { fake in try HostThreadHandle.spawn(.vcpu, name: "fake-vcpu") { fake.run() } }

        // Both park before their first instruction.
        #expect(gate.waitForStop(timeout: 5) == .stopped(vcpu: 0, reason: .requested))

        // Stepping vCPU 0 leaves vCPU 1 parked.
        gate.release([0: ResumePlan(mode: .stepInstruction)])
        #expect(gate.waitForStop(timeout: 5) == .stopped(vcpu: 0, reason: .singleStep))
        #expect(hitter.plans.withLock { $0.isEmpty })

        // Continuing both: vCPU 1 hits its breakpoint, vCPU 0 is asked to park as well.
        gate.release([0: ResumePlan(mode: .run), 1: ResumePlan(mode: .run)])
        #expect(gate.waitForStop(timeout: 5) == .stopped(vcpu: 1, reason: .softwareBreakpoint(address: 0x1000)))
        #expect(gate.parkedReasons[0] == .requested)

        // Let both finish.
        let end = ResumePlan(mode: .run, exitBreakpoints: [.init(family: "end")])
        gate.release([0: end, 1: end])
        for thread in threads { thread.join() }
        #expect(gate.waitForStop(timeout: 5) == .ended)
        #expect(gate.finishedVCPUs == [0, 1])
    }

    @Test func waitingTimesOutWhileVCPUsRun() {
        let gate = DebugGate(vcpuCount: 1)
        gate.setKick {}
        // Nothing has parked yet: no stop to report.
        #expect(gate.waitForStop(timeout: 0.05) == nil)
        gate.end()
        #expect(gate.waitForStop(timeout: 0.05) == .ended)
    }
}
