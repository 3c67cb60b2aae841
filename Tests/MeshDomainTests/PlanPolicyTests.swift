import MeshDomain
import MeshProto
import Testing

/// The plan table of the seed, rule by rule.
@Suite("PlanPolicy", .timeLimit(.minutes(1)))
struct PlanPolicyTests {
    @Test("every plan's cap, tier and gate", arguments: [
        (Mesh_V1_Plan.free, 3 as Int?, Mesh_V1_DiagnosticsLevel.basicState, false),
        (.pro, 20, .perPeerStats, false),
        (.team, 100, .auditLog, false),
        (.enterprise, nil, .samlGated, true),
    ])
    func catalogue(plan: Mesh_V1_Plan, cap: Int?, tier: Mesh_V1_DiagnosticsLevel, gate: Bool) throws {
        let p = try #require(plan.policy)
        #expect(p.deviceCap == cap)
        #expect(p.diagnostics == tier)
        #expect(p.offersSAMLGate == gate)
        #expect(p.meshToggle)
    }

    @Test("the cap admits exactly cap devices", arguments: PlanPolicy.catalogue)
    func capBoundary(policy: PlanPolicy) {
        guard let cap = policy.deviceCap else {
            #expect(throws: Never.self) { try policy.checkCap(used: 1_000_000) }
            return
        }
        #expect(throws: Never.self) { try policy.checkCap(used: cap - 1) }
        #expect(throws: MeshError.quotaExceeded(plan: policy.plan, cap: cap)) { try policy.checkCap(used: cap) }
        #expect(throws: MeshError.quotaExceeded(plan: policy.plan, cap: cap)) { try policy.checkCap(used: cap + 1) }
    }

    @Test func unknownPlansHaveNoPolicy() {
        #expect(Mesh_V1_Plan.unspecified.policy == nil)
        #expect(Mesh_V1_Plan.UNRECOGNIZED(9).policy == nil)
        #expect(throws: MeshError.self) { try PlanPolicy.require(.unspecified) }
    }
}
