import Foundation
import Logging
import MeshDomain
import MeshNet
import MeshProto
import Metrics
import Synchronization

/// Keeps the node's packet filter equal to the tenant's access policy (docs/policies.md).
///
/// - A new policy, new settings or a full sync compile the whole filter (``FilterPlan``) and, when
///   it differs from the one in force, replace it in one `nft -f` transaction: the kernel swaps the
///   old rules for the new at once, so there is never a moment without a filter. No rule: the table
///   is removed (nothing filtered, as without policies).
/// - A member change adds and deletes only the set elements it touches, in one transaction too; if
///   that fails, the whole filter is replaced.
/// - After anything that may have taken an allowance away, the tracked flows of the tenant that the
///   new filter would refuse are forgotten (`conntrack -D`): their next packet is judged as a new
///   flow and dropped. Flows still allowed keep their entries and carry on.
///
/// The agent calls it from its one command queue, so calls never overlap; an error leaves the
/// previous filter in force, is reported in the node's state, and the agent resyncs.
public final class PolicyEnforcer: Sendable {
    let filter: (any PacketFilter)?
    let interface: String
    let logger: Logger
    private let state = Mutex<State>(State())
    let replaced = Counter(label: "mesh_node_policy_replaced_total")
    let updated = Counter(label: "mesh_node_policy_element_updates_total")
    let cut = Counter(label: "mesh_node_policy_flows_cut_total")

    struct State {
        /// The filter in force; nil while none is (no rule, or before the first sync).
        var plan: FilterPlan?
        /// Whether what the kernel holds is known to equal `plan` (false before the first apply and
        /// after a failure).
        var known = false
        var status = Mesh_V1_PolicyStatus()
    }

    /// `filter` nil: enforcement is off on this node (the policy is still tracked and reported).
    public init(filter: (any PacketFilter)?, interface: String, logger: Logger) {
        self.filter = filter
        self.interface = interface
        self.logger = logger
        state.withLock { $0.status.state = filter == nil ? "disabled" : "none" }
    }

    /// The node's policy status for its state subject.
    public func status() -> Mesh_V1_PolicyStatus { state.withLock { $0.status } }

    /// The filter in force (tests and benchmarks).
    public var plan: FilterPlan? { state.withLock { $0.plan } }

    /// Compiles the whole filter from `mesh` and puts it in force if it differs from the one in force.
    public func sync(_ mesh: MeshState) async throws {
        guard filter != nil else {
            state.withLock { s in
                s.status.version = mesh.policy.version
                s.status.rules = UInt32(mesh.policy.rules.count)
            }
            return
        }
        let plan = FilterPlan.compile(policy: mesh.policy, members: mesh.members.values, settings: mesh.settings, interface: interface)
        try await install(plan, mesh: mesh)
    }

    /// Follows one change that `mesh` already holds; `before` is the member the change replaced or
    /// removed (nil for a new one).
    public func apply(_ change: Mesh_V1_PeersUpdated, before: Mesh_V1_Member?, mesh: MeshState) async throws {
        switch change.change {
        case .upsert(let m):
            try await memberChanged(before: before, after: m, mesh: mesh)
        case .remove:
            try await memberChanged(before: before, after: nil, mesh: mesh)
        case .settings, .policy:
            try await sync(mesh)
        case nil:
            break
        }
    }

    func memberChanged(before: Mesh_V1_Member?, after: Mesh_V1_Member?, mesh: MeshState) async throws {
        let (current, known) = state.withLock { ($0.plan, $0.known) }
        guard let filter else { return }
        guard var plan = current, known else {
            // No filter in force (no rule: a member change cannot add one), or what the kernel holds
            // is unknown (the full path decides).
            if !known { try await sync(mesh) }
            return
        }
        let changes = plan.update(before: before, after: after, settings: mesh.settings)
        guard !changes.isEmpty else { return }
        do {
            try await filter.apply(plan.script(for: changes))
        } catch {
            logger.warning("updating the filter's sets failed; replacing the whole filter", metadata: ["error": "\(error)"])
            state.withLock { $0.known = false }
            try await sync(mesh)
            return
        }
        state.withLock { $0.plan = plan }
        updated.increment()
        if !changes.removed.isEmpty {
            let gone = Set(changes.removed.values.flatMap { $0 })
            try await cutRevoked(plan, mesh: mesh) { gone.contains($0.source) || gone.contains($0.destination) }
        }
    }

    /// Puts `plan` in force (nil: no filter), then forgets the tracked flows it refuses.
    func install(_ plan: FilterPlan?, mesh: MeshState) async throws {
        let (current, known) = state.withLock { ($0.plan, $0.known) }
        guard let filter else { return }
        if known && current == plan {
            state.withLock { s in
                s.status.version = mesh.policy.version
                s.status.rules = UInt32(mesh.policy.rules.count)
            }
            return
        }
        let table = FilterPlan.tableName(interface: interface)
        do {
            try await filter.apply(plan?.script() ?? FilterPlan.removal(table: table))
        } catch let e as PacketFilterError where e.toolMissing && plan == nil {
            // Nothing to filter and no nft here: there is no table of ours to remove either.
            logger.warning("nft is not installed; the access policy of this tenant needs it once it has rules", metadata: ["error": "\(e)"])
        } catch {
            state.withLock { s in
                s.known = false
                s.status.state = "failed"
                s.status.error = "\(error)"
            }
            logger.error("the packet filter could not be applied; the previous one stays in force",
                         metadata: ["policy.version": "\(mesh.policy.version)", "error": "\(error)"])
            throw error
        }
        state.withLock { s in
            s.plan = plan
            s.known = true
            s.status.version = mesh.policy.version
            s.status.rules = UInt32(mesh.policy.rules.count)
            s.status.state = plan == nil ? "none" : "enforced"
            s.status.error = ""
            s.status.appliedAtMs = Date().unixMilliseconds
        }
        replaced.increment()
        logger.info("packet filter in force", metadata: ["policy.version": "\(mesh.policy.version)", "rules": "\(mesh.policy.rules.count)",
                                                         "sets": "\(plan?.sets.count ?? 0)", "lines": "\(plan?.lines.count ?? 0)"])
        if let plan { try await cutRevoked(plan, mesh: mesh) { _ in true } }
    }

    /// Forgets the tenant's tracked flows (those `relevant` picks) that `plan` refuses.
    func cutRevoked(_ plan: FilterPlan, mesh: MeshState, relevant: (TrackedFlow) -> Bool) async throws {
        guard let filter else { return }
        let prefixes = [mesh.settings.ipv4Prefix, mesh.settings.ipv6Prefix].compactMap(IPPrefix.init)
        guard !prefixes.isEmpty else { return }
        let flows: [TrackedFlow]
        do {
            flows = try await filter.trackedFlows(from: prefixes)
        } catch {
            // The filter is in force; only flows opened before it may outlive it.
            logger.warning("cannot read tracked flows; revoked flows may carry on until they end", metadata: ["error": "\(error)"])
            state.withLock { $0.status.error = "tracked flows not read: \(error)" }
            return
        }
        let revoked = flows.filter { f in relevant(f) && prefixes.contains { $0.contains(f.destination) } && !plan.allows(f) }
        guard !revoked.isEmpty else { return }
        do {
            let n = try await filter.forget(revoked)
            cut.increment(by: n)
            logger.info("cut flows the policy no longer allows", metadata: ["flows": "\(n)"])
        } catch {
            logger.warning("cannot forget revoked flows", metadata: ["error": "\(error)"])
            state.withLock { $0.status.error = "revoked flows not cut: \(error)" }
        }
    }
}
