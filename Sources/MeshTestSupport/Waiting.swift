import Foundation
import Synchronization

/// A wait in a test that ran out of time: what was awaited, and for how long.
///
/// Every wait in the tests has a deadline, so that a regression fails with this error instead of
/// hanging the run. Deadlines are generous (the suites share two cores with each other); they bound
/// a wait, they do not measure speed.
public struct DeadlineExceeded: Error, CustomStringConvertible {
    public let what: String
    public let timeout: Duration

    public init(_ what: String, timeout: Duration) {
        self.what = what
        self.timeout = timeout
    }

    public var description: String { "\(what): not done within \(timeout)" }
}

/// The default deadline of a wait in a test.
public let defaultTestDeadline: Duration = .seconds(60)

/// The two tasks of one ``withDeadline(_:_:_:)``: the operation and its timer.
final class DeadlineTasks: Sendable {
    let work = Mutex<Task<Void, Never>?>(nil)
    let timer = Mutex<Task<Void, Never>?>(nil)
}

/// Resumes a continuation once, from whichever of the operation and the timer comes first.
final class OnceContinuation<T: Sendable>: Sendable {
    private let continuation: Mutex<CheckedContinuation<T, any Error>?>
    init(_ c: CheckedContinuation<T, any Error>) { continuation = Mutex(c) }
    @discardableResult
    func resume(_ result: Result<T, any Error>) -> Bool {
        guard let c = continuation.withLock({ c -> CheckedContinuation<T, any Error>? in defer { c = nil }; return c }) else { return false }
        c.resume(with: result)
        return true
    }
}

/// Runs `operation` and returns its result, or throws ``DeadlineExceeded`` when it has not finished
/// within `timeout`.
///
/// On time-out the operation is cancelled and abandoned: the caller does not wait for it, because
/// what hangs in a regression (a continuation nobody resumes, a blocking call) often ignores
/// cancellation, and waiting for it would hang the test just the same. That is why the operation
/// runs in a task of its own rather than in a task group.
public func withDeadline<T: Sendable>(_ timeout: Duration = defaultTestDeadline, _ what: @autoclosure () -> String,
                                      _ operation: @escaping @Sendable () async throws -> T) async throws -> T {
    let description = what()
    let tasks = DeadlineTasks()
    return try await withTaskCancellationHandler {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, any Error>) in
            let once = OnceContinuation(c)
            tasks.timer.withLock {
                $0 = Task {
                    try? await Task.sleep(for: timeout)
                    if Task.isCancelled { return }
                    if once.resume(.failure(DeadlineExceeded(description, timeout: timeout))) { tasks.work.withLock { $0?.cancel() } }
                }
            }
            tasks.work.withLock {
                $0 = Task {
                    let result: Result<T, any Error>
                    do { result = .success(try await operation()) } catch { result = .failure(error) }
                    if once.resume(result) { tasks.timer.withLock { $0?.cancel() } }
                }
            }
        }
    } onCancel: {
        tasks.work.withLock { $0?.cancel() }
    }
}

/// Polls `probe` every `interval` until it returns a value, and returns that value; throws
/// ``DeadlineExceeded`` when `timeout` passes first. An error thrown by `probe` ends the wait.
public func waitFor<T>(_ what: @autoclosure () -> String, timeout: Duration = defaultTestDeadline, interval: Duration = .milliseconds(50),
                       _ probe: () async throws -> T?) async throws -> T {
    let deadline = ContinuousClock.now + timeout
    while true {
        if let value = try await probe() { return value }
        if ContinuousClock.now >= deadline { throw DeadlineExceeded(what(), timeout: timeout) }
        try await Task.sleep(for: interval)
    }
}

/// Polls `condition` every `interval` until it holds; throws ``DeadlineExceeded`` when `timeout`
/// passes first.
public func waitUntil(_ what: @autoclosure () -> String, timeout: Duration = defaultTestDeadline, interval: Duration = .milliseconds(50),
                      _ condition: () async throws -> Bool) async throws {
    _ = try await waitFor(what(), timeout: timeout, interval: interval) { try await condition() ? true : nil }
}

/// A value handed to one child task and read back after it ended (never touched by two at once).
final class HandOver<T>: @unchecked Sendable {
    var value: T
    init(_ value: T) { self.value = value }
}

/// The next element of an async iterator (nil at its end), or ``DeadlineExceeded`` when none came
/// within `timeout`.
public func next<I: AsyncIteratorProtocol & SendableMetatype>(_ iterator: inout I, within timeout: Duration = defaultTestDeadline,
                                           _ what: @autoclosure () -> String) async throws -> I.Element? where I.Element: Sendable {
    // The iterator moves into the task that waits and comes back once it is done (after a
    // time-out it is left behind: the test has failed).
    let box = HandOver(iterator)
    let element = try await withDeadline(timeout, what()) {
        var it = box.value
        let element = try await it.next()
        box.value = it
        return element
    }
    iterator = box.value
    return element
}

/// Collects elements of `sequence` until `count` arrived; ``DeadlineExceeded`` (naming how many came)
/// when they did not within `timeout`.
public func collect<S: AsyncSequence & Sendable>(_ count: Int, from sequence: S, within timeout: Duration = defaultTestDeadline,
                                                 _ what: String) async throws -> [S.Element] where S.Element: Sendable {
    let got = HandOver<[S.Element]>([])
    do {
        return try await withDeadline(timeout, what) {
            var out: [S.Element] = []
            for try await element in sequence {
                out.append(element)
                got.value = out
                if out.count >= count { break }
            }
            return out
        }
    } catch let e as DeadlineExceeded {
        throw DeadlineExceeded("\(e.what) (\(got.value.count) of \(count) arrived)", timeout: timeout)
    }
}

/// A count shared between a test and the tasks it starts (for waiting on progress).
public final class TestCounter: Sendable {
    private let n = Mutex(0)
    public init() {}
    public func increment() { n.withLock { $0 += 1 } }
    public var value: Int { n.withLock { $0 } }
}

extension Sequence {
    /// `allSatisfy` for a predicate that awaits (a query, a command waited for off the pool).
    public func allSatisfy(_ predicate: (Element) async throws -> Bool) async rethrows -> Bool {
        for element in self where try await !predicate(element) { return false }
        return true
    }
}

/// A gate that tasks wait at until it is opened once (holding an operation at a known point while
/// the test arranges what happens meanwhile).
public final class AsyncGate: Sendable {
    private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    public init() {}

    /// Returns at once if the gate is open, else when it opens.
    public func wait() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.open { return true }
                s.waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }

    /// Opens the gate and lets every waiter through.
    public func open() {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.open = true
            defer { s.waiters = [] }
            return s.waiters
        }
        for w in waiters { w.resume() }
    }
}
