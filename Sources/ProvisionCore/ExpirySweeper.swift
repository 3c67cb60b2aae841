import Foundation
import Logging
import MeshDomain
import ServiceLifecycle

/// Suspends devices whose expiry has passed. Every ProvisionSvc replica runs one; each device is
/// suspended exactly once whichever replica notices, because the claim, the suspension, the outbox
/// change and the audit entry are one transaction with the tenant locked
/// (``DeviceRepository/expireDevices(limit:expire:)``). The rule is
/// ``DeviceLifecycle/expire(at:)``.
public struct ExpirySweeper: Service {
    let devices: DeviceService
    let interval: Duration
    let logger: Logger

    public init(devices: DeviceService, interval: Duration, logger: Logger) {
        self.devices = devices
        self.interval = interval
        self.logger = logger
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    // A full batch means more may be due: go on at once.
                    while try await devices.expireDue(limit: 100).count >= 100, !Task.isCancelled {}
                } catch {
                    logger.warning("expiry sweep failed; will retry", metadata: ["error": "\(error)"])
                }
                try? await Task.sleep(for: interval)
            }
        }
    }
}
