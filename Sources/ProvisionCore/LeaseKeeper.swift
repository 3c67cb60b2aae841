import Foundation
import Logging
import MeshDomain
import ServiceLifecycle

/// Gives addresses back to AllocatorSvc: those of deleted devices and nodes, and those of
/// allocations whose owner never committed (a replica that died between the allocation and its
/// transaction). ProvisionSvc records what it owes in its own table (``LeaseTaskRepository``), so
/// AllocatorSvc needs no access to ProvisionSvc's tables and no guesswork: a lease is permanent
/// until its owner's service releases it. Every replica runs one; they claim tasks with
/// `SKIP LOCKED`, and a claimed task that is not finished becomes due again.
public struct LeaseKeeper: Service {
    let tasks: any LeaseTaskRepository
    let allocator: any AddressAllocator
    let interval: Duration
    let logger: Logger

    public init(tasks: any LeaseTaskRepository, allocator: any AddressAllocator, interval: Duration = .seconds(1), logger: Logger) {
        self.tasks = tasks
        self.allocator = allocator
        self.interval = interval
        self.logger = logger
    }

    /// Releases up to `limit` due tasks; returns how many were finished.
    @discardableResult
    public func runOnce(limit: Int = 100) async throws(MeshError) -> Int {
        var done = 0
        for t in try await tasks.claimLeaseTasks(limit: limit, retryAfter: .seconds(30)) {
            do {
                try await allocator.release(tenant: t.tenant, owner: t.owner, neverPublished: t.neverPublished, requestID: UUID().lowercased)
                try await tasks.finishLeaseTask(owner: t.owner)
                done += 1
            } catch {
                logger.warning("address release failed; will retry", metadata: ["owner.id": "\(t.owner.lowercased)", "error": "\(error)"])
            }
        }
        return done
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    let n = try await runOnce()
                    if n > 0 { logger.debug("released addresses", metadata: ["count": "\(n)"]) }
                } catch {
                    logger.warning("lease tasks unavailable", metadata: ["error": "\(error)"])
                }
                try? await Task.sleep(for: interval)
            }
        }
    }
}

extension LeaseTaskRepository {
    /// Gives an owner's addresses back at once and forgets the task: after a creation that did not
    /// commit (`neverPublished`: free at once) or a deletion (they wait out the quarantine). When
    /// that fails, the lease keeper does it from the task.
    func giveBack(tenant: UUID, owner: UUID, neverPublished: Bool, via allocator: any AddressAllocator, requestID: String,
                  logger: Logger) async {
        do {
            try await allocator.release(tenant: tenant, owner: owner, neverPublished: neverPublished, requestID: requestID)
            try await finishLeaseTask(owner: owner)
        } catch {
            logger.warning("address release failed; the lease keeper will retry", metadata: ["owner.id": "\(owner.lowercased)", "error": "\(error)"])
        }
    }
}
