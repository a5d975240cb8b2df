import Foundation

/// `tandem-bench netlink [--count N]`: prints times and ratios; not a test.
let args = Array(CommandLine.arguments.dropFirst())
guard let what = args.first, what == "netlink" else {
    FileHandle.standardError.write(Data("usage: tandem-bench netlink [--count N]\n".utf8))
    exit(2)
}
var count = 1000
if let i = args.firstIndex(of: "--count"), i + 1 < args.count {
    guard let n = Int(args[i + 1]), (1...4000).contains(n) else {
        FileHandle.standardError.write(Data("tandem-bench: --count takes 1 to 4000, not '\(args[i + 1])'\n".utf8))
        exit(2)
    }
    count = n
}
guard getuid() == 0 else {
    FileHandle.standardError.write(Data("tandem-bench netlink: needs root (it makes a network namespace)\n".utf8))
    exit(1)
}
do {
    let rows = try await NetlinkBenchmark(count: count).run()
    print("netlink benchmark, \(count) objects, one namespace, times in ms")
    print("operation".padding(toLength: 42, withPad: " ", startingAt: 0) + "   tandem   other   ratio (other/tandem)  other")
    for r in rows {
        print(r.name.padding(toLength: 42, withPad: " ", startingAt: 0)
              + String(format: " %8.1f %7.1f %8.2fx              ", r.ours * 1000, r.theirs * 1000, r.theirs / r.ours) + r.theirsName)
    }
} catch {
    FileHandle.standardError.write(Data("tandem-bench: \(error)\n".utf8))
    exit(1)
}
