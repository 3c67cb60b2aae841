import MeshProto

/// The plan catalogue of the seed's plan table, in one place: what each plan includes and the rules
/// that follow from it. Every service asks this type; nothing else knows a cap or a tier.
///
/// | plan | mesh on/off | device cap | diagnostics | access rules |
/// |---|---|---|---|---|
/// | Free (Community) | yes | 3 | basic state | 10 |
/// | Pro | yes | 20 | + per-peer stats | 50 |
/// | Team | yes | 100 | + audit log of provisions | 500 |
/// | Enterprise | yes | unlimited | + SAML-gated provisioning | 1,000 |
public struct PlanPolicy: Sendable, Equatable {
    public let plan: Mesh_V1_Plan
    /// The device cap, or nil for unlimited.
    public let deviceCap: Int?
    /// The highest diagnostics level the plan includes; every lower level is included too.
    public let diagnostics: Mesh_V1_DiagnosticsLevel
    /// Whether an admin may turn the tenant's mesh off and on.
    public let meshToggle: Bool
    /// How many access-policy rules the tenant may have (nil: no cap of the plan's own; the size of
    /// one change to the nodes still bounds it, ``PolicyValidation/maxEncodedBytes``).
    public let policyRuleCap: Int?

    /// Every plan a tenant can be on, cheapest first.
    public static let catalogue: [PlanPolicy] = [
        PlanPolicy(plan: .free, deviceCap: 3, diagnostics: .basicState, meshToggle: true, policyRuleCap: 10),
        PlanPolicy(plan: .pro, deviceCap: 20, diagnostics: .perPeerStats, meshToggle: true, policyRuleCap: 50),
        PlanPolicy(plan: .team, deviceCap: 100, diagnostics: .auditLog, meshToggle: true, policyRuleCap: 500),
        PlanPolicy(plan: .enterprise, deviceCap: nil, diagnostics: .samlGated, meshToggle: true, policyRuleCap: 1000),
    ]

    /// The policy of a plan; nil for a value that names no plan (unspecified or unknown).
    public static func of(_ plan: Mesh_V1_Plan) -> PlanPolicy? {
        catalogue.first { $0.plan == plan }
    }

    /// The policy of a plan, or `invalidArgument` naming `field`.
    public static func require(_ plan: Mesh_V1_Plan, field: String = "plan") throws(MeshError) -> PlanPolicy {
        guard let p = of(plan) else { throw .invalidArgument(field: field, message: "plan must be free, pro, team or enterprise") }
        return p
    }

    /// Whether the plan includes a diagnostics level.
    public func includes(_ level: Mesh_V1_DiagnosticsLevel) -> Bool {
        level.rawValue <= diagnostics.rawValue
    }

    /// Whether the plan offers SAML-gated provisioning.
    public var offersSAMLGate: Bool { includes(.samlGated) }

    /// Throws `permissionDenied` unless the plan includes `level`; `what` names the feature.
    public func requireDiagnostics(_ level: Mesh_V1_DiagnosticsLevel, for what: String) throws(MeshError) {
        guard includes(level) else {
            let needed = Self.catalogue.first { $0.includes(level) }?.plan.displayName ?? "a higher"
            throw .permissionDenied("\(what) needs the \(needed) plan or above (this tenant is on \(plan.displayName))")
        }
    }

    /// A device as a listing on this plan shows it: the status pill's basic state (online, last
    /// handshake) always; the per-peer stats (endpoint, traffic) only on a plan that includes them.
    public func presenting(_ device: consuming Mesh_V1_Device) -> Mesh_V1_Device {
        // Consuming: a device built for this call is changed in place, not copied (its storage is shared otherwise).
        device.perPeerStats = includes(.perPeerStats)
        if !device.perPeerStats {
            device.endpoint = ""
            device.rxBytes = 0
            device.txBytes = 0
        }
        return device
    }

    /// Throws `quotaExceeded` when `used` devices already fill the cap (one more would not fit).
    public func checkCap(used: Int) throws(MeshError) {
        if let cap = deviceCap, used >= cap { throw .quotaExceeded(plan: plan, cap: cap) }
    }

    /// Throws `failedPrecondition` when a tenant on this plan asks for the SAML gate.
    public func checkSAMLGate(requested: Bool) throws(MeshError) {
        if requested && !offersSAMLGate {
            throw .failedPrecondition("SAML-gated provisioning is an \(Self.catalogue.first { $0.offersSAMLGate }!.plan.displayName) feature")
        }
    }

    /// The gate on provisioning: a tenant that requires SAML (on a plan that offers it) accepts only
    /// callers whose session was authenticated through SAML (`amr` contains "saml").
    public func checkProvisioningSession(tenantRequiresSAML: Bool, amr: [String]) throws(MeshError) {
        guard offersSAMLGate && tenantRequiresSAML else { return }
        guard amr.contains(where: { $0.lowercased() == "saml" }) else {
            throw .permissionDenied("this tenant requires a SAML-authenticated session to provision devices")
        }
    }

    /// What a tenant keeps of its SAML gate after a plan change: the gate survives only on a plan
    /// that offers it.
    public func samlGate(after requested: Bool) -> Bool { requested && offersSAMLGate }
}

extension Mesh_V1_Plan {
    /// "Free", "Pro", "Team", "Enterprise".
    public var displayName: String {
        switch self {
        case .free: "Free"
        case .pro: "Pro"
        case .team: "Team"
        case .enterprise: "Enterprise"
        default: "Unknown"
        }
    }

    /// The lowercase name stored in the database and used in APIs.
    public var key: String {
        switch self {
        case .free: "free"
        case .pro: "pro"
        case .team: "team"
        case .enterprise: "enterprise"
        default: "unspecified"
        }
    }

    /// Parses the lowercase name ("community" is the Free plan's other name).
    public init?(key: String) {
        switch key.lowercased() {
        case "free", "community": self = .free
        case "pro": self = .pro
        case "team": self = .team
        case "enterprise": self = .enterprise
        default: return nil
        }
    }

    /// The plan's policy; nil for an unspecified or unknown value.
    public var policy: PlanPolicy? { PlanPolicy.of(self) }
}
