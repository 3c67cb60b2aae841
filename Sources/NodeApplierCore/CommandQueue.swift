import Synchronization

/// The agent's one queue (``NodeAgent/Command``): deltas and full syncs in arrival order, consumed by
/// one task. What an unbounded `AsyncStream` gives, in code the compiler specialises for the one
/// element type: `AsyncStream`'s generic storage looked up type metadata and shifted its buffer
/// (`removeFirst`) on every element, about a tenth of a simulated node's CPU per change at 4,000
/// nodes (docs/benchmarks.md, "Scale").
final class CommandQueue: Sendable {
    private struct State {
        var items: [NodeAgent.Command] = []
        /// The next item to hand out; the items before it are spent.
        var head = 0
        /// The consumer, while it waits for an item.
        var waiter: UnsafeContinuation<NodeAgent.Command?, Never>?
        var finished = false

        mutating func pop() -> NodeAgent.Command? {
            guard head < items.count else { return nil }
            let item = items[head]
            head += 1
            if head == items.count {
                items.removeAll(keepingCapacity: true)
                head = 0
            } else if head >= 256 && head * 2 >= items.count {
                items.removeFirst(head)
                head = 0
            }
            return item
        }
    }

    private let state = Mutex(State())

    /// Queues `command`, or hands it straight to the waiting consumer. False once the queue is
    /// finished: the command was not queued.
    @discardableResult
    func push(_ command: NodeAgent.Command) -> Bool {
        let (queued, waiter) = state.withLock { s -> (Bool, UnsafeContinuation<NodeAgent.Command?, Never>?) in
            if s.finished { return (false, nil) }
            if let w = s.waiter {
                s.waiter = nil
                return (true, w)
            }
            s.items.append(command)
            return (true, nil)
        }
        waiter?.resume(returning: command)
        return queued
    }

    /// The next command; nil once the queue is finished and empty, or the consuming task is cancelled.
    /// One consumer at a time.
    func next() async -> NodeAgent.Command? {
        enum Ready { case item(NodeAgent.Command), end, wait }
        let ready = state.withLock { s -> Ready in
            if let item = s.pop() { return .item(item) }
            return s.finished ? .end : .wait
        }
        switch ready {
        case .item(let item): return item
        case .end: return nil
        case .wait: break
        }
        return await withTaskCancellationHandler {
            await withUnsafeContinuation { (c: UnsafeContinuation<NodeAgent.Command?, Never>) in
                let now = state.withLock { s -> Ready in
                    if let item = s.pop() { return .item(item) }
                    if s.finished || Task.isCancelled { return .end }
                    s.waiter = c
                    return .wait
                }
                switch now {
                case .item(let item): c.resume(returning: item)
                case .end: c.resume(returning: nil)
                case .wait: break
                }
            }
        } onCancel: {
            resumeWaiter()
        }
    }

    /// Ends the queue: the consumer gets what is queued, then nil; later pushes are refused.
    func finish() {
        state.withLock { $0.finished = true }
        resumeWaiter()
    }

    private func resumeWaiter() {
        let w = state.withLock { s -> UnsafeContinuation<NodeAgent.Command?, Never>? in
            defer { s.waiter = nil }
            return s.waiter
        }
        w?.resume(returning: nil)
    }
}
