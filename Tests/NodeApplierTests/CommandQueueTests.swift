@testable import NodeApplierCore
import MeshProto
import Testing

/// The agent's queue: arrival order, a consumer that waits, finish and cancellation.
@Suite(.timeLimit(.minutes(1))) struct CommandQueueTests {
    func update(_ revision: UInt64) -> NodeAgent.Command {
        var u = Mesh_V1_PeersUpdated()
        u.revision = revision
        return .update(u)
    }

    func revision(_ c: NodeAgent.Command?) -> UInt64? {
        guard case .update(let u) = c else { return nil }
        return u.revision
    }

    @Test func itemsComeOutInOrderAcrossTheBufferAndAWaitingConsumer() async {
        let q = CommandQueue()
        // More than the compaction threshold, consumed part-way while more arrive.
        for r in 1...300 { q.push(update(UInt64(r))) }
        var got: [UInt64] = []
        for _ in 0..<200 { got.append(revision(await q.next())!) }
        for r in 301...700 { q.push(update(UInt64(r))) }
        for _ in 0..<500 { got.append(revision(await q.next())!) }
        #expect(got == Array(1...700))
        // A consumer that waits gets the next push.
        let waiting = Task { await q.next() }
        try? await Task.sleep(for: .milliseconds(20))
        q.push(update(701))
        #expect(revision(await waiting.value) == 701)
    }

    @Test func finishDrainsWhatIsQueuedThenEndsAndRefusesMore() async {
        let q = CommandQueue()
        q.push(update(1))
        q.push(update(2))
        q.finish()
        #expect(!q.push(update(3)))
        #expect(revision(await q.next()) == 1)
        #expect(revision(await q.next()) == 2)
        #expect(await q.next() == nil)
        // A consumer waiting when the queue is finished gets nil.
        let q2 = CommandQueue()
        let waiting = Task { await q2.next() }
        try? await Task.sleep(for: .milliseconds(20))
        q2.finish()
        #expect(await waiting.value == nil)
    }

    @Test func aCancelledConsumerGetsNilAndTheQueueStaysUsable() async {
        let q = CommandQueue()
        let waiting = Task { await q.next() }
        try? await Task.sleep(for: .milliseconds(20))
        waiting.cancel()
        #expect(await waiting.value == nil)
        q.push(update(5))
        #expect(revision(await q.next()) == 5)
    }
}
