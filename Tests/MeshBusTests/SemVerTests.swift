import MeshBus
import Testing

@Suite(.timeLimit(.minutes(2))) struct SemVerAndSubjectSyntaxTests {
    @Test(arguments: ["1.0.0", "0.1.2", "10.20.30", "1.0.0-alpha", "1.0.0-rc.1+build.5", "1.0.0+20130313144700"])
    func validSemVer(_ v: String) { #expect(SemVer.isValid(v)) }

    @Test(arguments: ["1", "1.0", "01.0.0", "1.0.0-", "1.0.0-01", "1.0.0+", "v1.0.0", "1.0.0-a..b", ""])
    func invalidSemVer(_ v: String) { #expect(!SemVer.isValid(v)) }

    @Test(arguments: ["a.b.c", "mesh.v1.node.x.state", "a.*.c", "a.>"])
    func validSubjects(_ s: String) throws { try Subjects.validate(s, wildcards: true) }

    @Test(arguments: ["", "a..b", ".a", "a.", "a b", "a.>.b", "a.b*"])
    func invalidSubjects(_ s: String) { #expect(throws: BusError.self) { try Subjects.validate(s, wildcards: true) } }
}
