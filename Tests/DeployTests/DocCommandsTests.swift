import Foundation
import Testing
import TandemLabSupport
import TandemTestSupport

/// The commands the README and the docs show (issue #19): each `tandem-host` / `tandem-agent`
/// / `tandem-bench` command in a shell (or untagged) block names subcommands that exist and options its
/// subcommand takes (read from the built binary's --help), each script it names is there,
/// and the ones that can run here without a VM, a NIC or a running daemon are run: --help,
/// `run --check` on every example configuration, promtool on the rules.
@Suite(.serialized, .exclusive) struct DocCommandsTests {
    static let repo = DeployTests.repo

    /// Every documentation file with commands: README, deploy/README, docs/*.md.
    static var files: [String] {
        let docs = (try? FileManager.default.contentsOfDirectory(atPath: repo.appendingPathComponent("docs").path)) ?? []
        return ["README.md", "deploy/README.md"] + docs.filter { $0.hasSuffix(".md") }.sorted().map { "docs/" + $0 }
    }

    /// The shell commands in a file's ```sh / ```bash blocks: one per pipeline stage, `&&`
    /// and `;` part, without comments, continuation lines joined; with the line they start on.
    static func commands(in file: String) -> [(line: Int, words: [String])] {
        guard let text = try? String(contentsOf: repo.appendingPathComponent(file), encoding: .utf8) else { return [] }
        var out: [(Int, [String])] = []
        var inBlock = false, inShell = false, tagged = false, pending = "", start = 0
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = String(raw)
            // Shell blocks whole; in untagged ones (layouts, output, transcripts) the lines
            // with a `$ ` prompt.
            if line.hasPrefix("```") {
                if inBlock { inBlock = false; inShell = false } else {
                    inBlock = true
                    tagged = ["```sh", "```bash", "```shell"].contains(line)
                    inShell = tagged || line == "```" || line == "```console"
                }
                continue
            }
            guard inShell, tagged || line.hasPrefix("$ ") || !pending.isEmpty else { continue }
            var l = line.hasPrefix("$ ") ? String(line.dropFirst(2)) : line
            if let hash = l.range(of: " #") ?? (l.hasPrefix("#") ? l.range(of: "#") : nil) { l = String(l[..<hash.lowerBound]) }
            if pending.isEmpty { start = i + 1 }
            if l.hasSuffix("\\") { pending += l.dropLast() + " "; continue }
            let whole = pending + l
            pending = ""
            for part in whole.components(separatedBy: "&&").flatMap({ $0.components(separatedBy: ";") }).flatMap({ $0.components(separatedBy: "|") }) {
                let words = Self.words(part)
                if !words.isEmpty { out.append((start, words)) }
            }
        }
        return out
    }

    /// Shell words: quotes kept together (and taken off), no expansion.
    static func words(_ s: String) -> [String] {
        var out: [String] = [], cur = "", quote: Character?
        for c in s {
            if let q = quote { if c == q { quote = nil } else { cur.append(c) }; continue }
            if c == "'" || c == "\"" { quote = c; continue }
            if c == " " || c == "\t" { if !cur.isEmpty { out.append(cur); cur = "" }; continue }
            cur.append(c)
        }
        if !cur.isEmpty { out.append(cur) }
        return out
    }

    static func help(_ binary: String, _ path: [String]) throws -> String {
        try Shell.run([Binaries.path(binary)] + path + ["--help"]).stdout
    }

    /// The subcommands a --help lists.
    static func subcommands(_ help: String) -> [String] {
        guard let r = help.range(of: "SUBCOMMANDS:") else { return [] }
        return help[r.upperBound...].split(separator: "\n").compactMap { l in
            let t = l.drop { $0 == " " }
            guard l.hasPrefix("  "), !l.hasPrefix("       "), let w = t.split(separator: " ").first else { return nil }
            return String(w)
        }
    }

    @Test func everyCommandShownNamesSubcommandsAndOptionsThatExist() throws {
        var checked = 0
        var problems: [String] = []
        for file in Self.files {
            for (line, words) in Self.commands(in: file) {
                let where_ = "\(file):\(line): \(words.joined(separator: " "))"
                var words = words
                // `sudo`, `ip netns exec NS`, environment settings in front.
                while let w = words.first, w == "sudo" || w.contains("=") && !w.hasPrefix("-") { words.removeFirst() }
                guard let program = words.first else { continue }
                let name = (program as NSString).lastPathComponent
                if program.hasPrefix("./scripts/") || program.hasPrefix("scripts/") || program.hasPrefix("deploy/") || program.hasPrefix("./deploy/") {
                    let path = Self.repo.appendingPathComponent(program.hasPrefix("./") ? String(program.dropFirst(2)) : program).path
                    if !FileManager.default.isExecutableFile(atPath: path) { problems.append("\(where_): \(program) is not an executable in the repository") }
                    let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
                    for flag in words.dropFirst() where flag.hasPrefix("--") {
                        let option = String(flag.prefix { $0 != "=" })
                        if !text.contains(option) { problems.append("\(where_): \(program) knows no \(option)") }
                    }
                    checked += 1
                    continue
                }
                guard ["tandem-host", "tandem-agent", "tandem-bench"].contains(name) else { continue }
                // The subcommand chain: words that are subcommands of the one before.
                var path: [String] = []
                var rest = Array(words.dropFirst())
                while let w = rest.first, Self.subcommands(try Self.help(name, path)).contains(w) { path.append(w); rest.removeFirst() }
                let help = try Self.help(name, path)
                if help.contains("SUBCOMMANDS:") && path.isEmpty && !rest.contains(where: { $0.hasPrefix("-") && $0 != "--version" && $0 != "--help" }) && !rest.isEmpty {
                    problems.append("\(where_): '\(rest[0])' is not a subcommand of \(name)")
                }
                for word in rest {
                    // (Synopses write options in brackets: [--json].)
                    let flag = word.trimmingCharacters(in: CharacterSet(charactersIn: "[]()"))
                    guard flag.hasPrefix("--") else { continue }
                    let option = String(flag.prefix { $0 != "=" })
                    if !help.contains(option) { problems.append("\(where_): \(([name] + path).joined(separator: " ")) takes no \(option)") }
                }
                checked += 1
            }
        }
        #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
        #expect(checked >= 15, "the docs show \(checked) commands (fewer: the reading of the docs broke)")
    }

    /// What runs here without a VM, a NIC or a daemon: every example configuration checks,
    /// the rules pass promtool, each binary's --help answers.
    @Test func theCommandsThatCanRunHereDo() throws {
        let examples = try FileManager.default.contentsOfDirectory(atPath: Self.repo.appendingPathComponent("deploy/examples").path).filter { $0.hasSuffix(".toml") }
        #expect(!examples.isEmpty)
        for e in examples {
            let r = try Shell.run([Binaries.path("tandem-host"), "run", "--config", Self.repo.appendingPathComponent("deploy/examples/\(e)").path, "--check"])
            #expect(r.status == 0 && r.stdout.contains(": OK ("), "\(e): \(r.stdout) \(r.stderr)")
        }
        for b in ["tandem-host", "tandem-agent", "tandem-bench"] {
            let r = try Shell.run([Binaries.path(b), "--help"])
            #expect(r.status == 0 && r.stdout.contains("USAGE:"), "\(b) --help")
        }
        if Shell.has("promtool") {
            #expect(try Shell.run(["promtool", "check", "rules", Self.repo.appendingPathComponent("deploy/prometheus/tandem-rules.yml").path]).status == 0)
        }
    }
}
