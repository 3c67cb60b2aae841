import Foundation
import MeshNet
import Testing

@Suite(.timeLimit(.minutes(2))) struct UUIDTextTests {
    @Test func roundTripsAndMatchesFoundation() throws {
        for _ in 0..<10_000 {
            let id = UUID()
            #expect(id.lowercasedText == id.uuidString.lowercased())
            #expect(UUID(text: id.uuidString) == id)
            #expect(UUID(text: id.uuidString.lowercased()) == id)
            #expect(UUID(text: id.uuidString.lowercased()[...]) == id)
        }
        let fixed = try #require(UUID(text: "123E4567-e89b-12d3-A456-426614174000"))
        #expect(fixed.lowercasedText == "123e4567-e89b-12d3-a456-426614174000")
        #expect(UUID(text: "00000000-0000-0000-0000-000000000000")?.lowercasedText == "00000000-0000-0000-0000-000000000000")
    }

    @Test(arguments: [
        "", "123e4567e89b12d3a456426614174000", "123e4567-e89b-12d3-a456-42661417400", "123e4567-e89b-12d3-a456-4266141740000",
        "123e4567-e89b-12d3-a456_426614174000", "123e4567-e89b-12d3-a456-42661417400g",
        "{123e4567-e89b-12d3-a456-426614174000}", "123e4567-e89b-12d3-a4564-26614174000", "12é4567-e89b-12d3-a456-42661417400",
    ])
    func rejectsWhatFoundationRejects(_ text: String) {
        #expect(UUID(text: text) == nil)
        #expect(UUID(uuidString: text) == nil)
    }

    /// Foundation's scanf-based parser skips white space inside a group (" 23e4567-…" reads as
    /// 23e45607-…); ours takes the canonical form only.
    @Test func isStricterThanFoundationAboutWhiteSpace() {
        #expect(UUID(text: " 23e4567-e89b-12d3-a456-426614174000") == nil)
        #expect(UUID(text: "123e4567-e89b-12d3-a456-426614174000 ") == nil)
    }
}
