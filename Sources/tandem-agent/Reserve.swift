import ArgumentParser
import Foundation
import GuestAgent
import TandemProtocol
import AgentCore
import TandemDaemon

/// `--socket PATH`, shared by the client commands.
struct SocketOption: ParsableArguments {
    @Option(name: .long, help: "The agent's socket.")
    var socket: String = "/run/tandem/agent.sock"
}

/// Splits `ADDR`, `ADDR:PORT`, `[V6]:PORT`, `PREFIX/LEN`.
func splitEndpoint(_ text: String, _ flag: String) throws -> (String, UInt16?) {
    func port(_ p: Substring) throws -> UInt16 {
        guard let v = UInt16(p), v > 0 else { throw ValidationError("\(flag) '\(text)': '\(p)' is not a port from 1 to 65535") }
        return v
    }
    if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
        let addr = String(text[text.index(after: text.startIndex)..<close])
        let rest = text[text.index(after: close)...]
        if rest.isEmpty { return (addr, nil) }
        guard rest.hasPrefix(":") else { throw ValidationError("\(flag) '\(text)': expected [ADDRESS]:PORT") }
        return (addr, try port(rest.dropFirst()))
    }
    let colons = text.filter { $0 == ":" }.count
    if colons == 1, let c = text.firstIndex(of: ":") {
        return (String(text[..<c]), try port(text[text.index(after: c)...]))
    }
    return (text, nil)
}

extension TandemAgent {
    struct Reserve: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Reserve bandwidth for some flows, admitted by the host.",
            discussion: "Prints the reservation's id. The reservation lives while this command holds it (the default, or --hold: until Ctrl-C or SIGTERM), or for --ttl after it exits.")

        @Argument(help: "The rate, as tc writes it: 200mbit, 1gbit, 500kbit.")
        var rate: String

        @Option(name: .long, help: "tcp, udp or any.")
        var proto: String = "any"

        @Option(name: .long, help: "Destination ADDRESS[/LEN], ADDRESS:PORT or [IPv6]:PORT.")
        var dst: String?

        @Option(name: .long, help: "Source ADDRESS[/LEN], ADDRESS:PORT or [IPv6]:PORT.")
        var src: String?

        @Option(name: .long, help: "Destination port alone.")
        var dport: UInt16?

        @Option(name: .long, help: "Source port alone.")
        var sport: UInt16?

        @Flag(name: .long, help: "Hold the reservation until interrupted (Ctrl-C, SIGTERM); the default without --ttl.")
        var hold = false

        @Option(name: .long, help: "Keep the reservation this long after the command exits (e.g. 60s, 10m).")
        var ttl: String?

        @Flag(name: .long, help: "Print the answer as JSON.")
        var json = false

        @OptionGroup var socket: SocketOption

        func validate() throws {
            do { _ = try BitRate(parsing: rate) } catch { throw ValidationError("\(error)") }
            if hold && ttl != nil { throw ValidationError("choose --hold (the reservation lives while this command runs) or --ttl DURATION (it lives that long), not both") }
            if let ttl { do { _ = try DurationText.seconds(ttl) } catch { throw ValidationError("--ttl: \(error)") } }
        }

        func request() throws -> AgentRequest {
            var r = AgentRequest(op: "reserve", rate: rate, proto: proto, ttl: ttl)
            if let dst { let (a, p) = try splitEndpoint(dst, "--dst"); r.dst = a; r.dport = p }
            if let src { let (a, p) = try splitEndpoint(src, "--src"); r.src = a; r.sport = p }
            if let dport { r.dport = dport }
            if let sport { r.sport = sport }
            _ = try r.selector()   // names the bad value before the agent is asked
            return r
        }

        func run() throws {
            let req: AgentRequest
            do { req = try request() } catch let e as ValidationError { throw e } catch { throw ValidationError("\(error)") }
            let client = try AgentClient(path: socket.socket)
            let r = try client.call(req)
            if json { print(String(decoding: try JSONEncoder().encode(r), as: UTF8.self)) }
            guard r.ok, let id = r.id else { throw CommandFailure(r.error ?? "refused") }
            if !json { print(id) }
            if ttl == nil {
                FileHandle.standardError.write(Data("holding \(id) (\(rate)); Ctrl-C releases it\n".utf8))
                signal(SIGINT, SIG_IGN); signal(SIGTERM, SIG_IGN)
                let done = DispatchSemaphore(value: 0)
                let sources = [SIGINT, SIGTERM].map { sig -> DispatchSourceSignal in
                    let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
                    s.setEventHandler { done.signal() }
                    s.resume()
                    return s
                }
                DispatchQueue.global().async { client.waitForClose(seconds: 10 * 365 * 86400); done.signal() }
                done.wait()
                sources.forEach { $0.cancel() }
            }
        }
    }

    struct Release: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Release a reservation by its id.")
        @Argument(help: "The id that reserve printed.")
        var id: String
        @OptionGroup var socket: SocketOption

        func run() throws {
            let r = try AgentClient(path: socket.socket).call(AgentRequest(op: "release", id: id))
            guard r.ok else { throw CommandFailure(r.error ?? "failed") }
        }
    }

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show the allocation, each class with its rate, drops and backlog, and the reservations with their holders.")
        @Flag(name: .long, help: "Print as JSON.")
        var json = false
        @OptionGroup var socket: SocketOption

        func run() throws {
            let r = try AgentClient(path: socket.socket).call(AgentRequest(op: "status"))
            guard r.ok, let s = r.status else { throw CommandFailure(r.error ?? "no status") }
            if json {
                let enc = JSONEncoder()
                enc.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try enc.encode(s), as: UTF8.self))
                return
            }
            print("interface \(s.interface)   host \(s.host)\(s.vm.map { " (vm \($0))" } ?? "")")
            print("allocation: soft \(s.softLimit)\(s.hardLimit.map { ", hard \($0)" } ?? "")\(s.epoch.map { ", epoch \($0)" } ?? "")")
            if let p = s.policy { print("policy: weight \(p.weight), min \(p.guarantee), max \(p.cap?.description ?? "none")") }
            print("")
            print("class      handle   rate         ceil         sent bytes      drops  backlog")
            for c in s.classes {
                print(c.name.padding(toLength: 10, withPad: " ", startingAt: 0) + " " + c.handle.padding(toLength: 8, withPad: " ", startingAt: 0) + " "
                      + c.rate.padding(toLength: 12, withPad: " ", startingAt: 0) + " " + c.ceil.padding(toLength: 12, withPad: " ", startingAt: 0) + " "
                      + String(c.sentBytes).padding(toLength: 15, withPad: " ", startingAt: 0) + " " + String(format: "%6d %8d", c.drops, c.backlog))
            }
            print("")
            if s.reservations.isEmpty { print("no reservations") }
            for r in s.reservations {
                print("\(r.id)  \(r.rate) (shaped \(r.shapedRate ?? "-"))  \(r.selector)  uid \(r.uid) pid \(r.pid)\(r.ttlRemaining.map { String(format: "  ttl %.0fs", $0) } ?? "  held by its connection")")
            }
        }
    }
}
