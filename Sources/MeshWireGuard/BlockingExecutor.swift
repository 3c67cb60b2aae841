import Dispatch

/// A serial executor that runs an actor's jobs on a private dispatch queue instead of Swift's
/// cooperative pool. Netlink `recv` and unix-socket I/O block; on a two-core machine the
/// cooperative pool has two threads, and blocking one of them stalls every other task.
final class BlockingExecutor: SerialExecutor {
    private let queue: DispatchQueue

    init(label: String) {
        queue = DispatchQueue(label: label)
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queue.async { job.runSynchronously(on: self.asUnownedSerialExecutor()) }
    }

    func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }

}
