// swift-tools-version:6.2
import PackageDescription

let package = Package(
    name: "tandem",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "tandem-host", targets: ["tandem-host"]),
        .executable(name: "tandem-agent", targets: ["tandem-agent"]),
        .executable(name: "tandem-bench", targets: ["tandem-bench"]),
        .library(name: "TandemProtocol", targets: ["TandemProtocol"]),
        .library(name: "HostController", targets: ["HostController"]),
        .library(name: "GuestAgent", targets: ["GuestAgent"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.1.0"),
        .package(url: "https://github.com/LebJe/TOMLKit.git", from: "0.6.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.80.0"),
    ],
    targets: [
        // Pure: messages, framing, validation, units. No I/O.
        .target(name: "TandemProtocol", path: "Sources/Protocol"),

        // libnl-3 / libnl-route-3 through pkg-config, plus static inline shims for macros.
        .systemLibrary(
            name: "CNetlink",
            path: "Sources/CNetlink",
            pkgConfig: "libnl-route-3.0",
            providers: [.apt(["libnl-3-dev", "libnl-route-3-dev", "libnl-genl-3-dev"])]
        ),
        // libvirt's C API through pkg-config (callback shims for the domain events).
        .systemLibrary(
            name: "CLibvirt",
            path: "Sources/CLibvirt",
            pkgConfig: "libvirt",
            providers: [.apt(["libvirt-dev"])]
        ),
        // libvirt wrapped: connection, domains' state and live XML, events on their own thread.
        .target(name: "TandemLibvirt", dependencies: ["CLibvirt"], path: "Sources/Libvirt"),
        // The kernel's struct tcp_info and inet_diag layouts (they clash with glibc's).
        .target(name: "CKernel", path: "Sources/CKernel"),

        .target(
            name: "Netlink",
            dependencies: ["CNetlink", "CKernel", "TandemProtocol"],
            path: "Sources/Netlink"
        ),
        // Frames and lines over ports and sockets, both sides: the channel hub, frame and line
        // channels, the round ticker, and the POSIX calls under them.
        .target(
            name: "TandemTransport",
            dependencies: [
                "TandemProtocol", "CKernel",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Sources/Transport"
        ),
        // What both daemons need to run as daemons: logging, signals, command-line failures.
        .target(
            name: "TandemDaemon",
            dependencies: [
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            path: "Sources/Daemon"
        ),
        // Shell-outs for the lab, the benchmarks and the tests (namespaces, iperf3, tc text):
        // never linked into a daemon.
        .target(name: "TandemLabSupport", path: "Sources/LabSupport"),

        // The host's pure core: configuration, allocator, rate meter, admin API values.
        .target(
            name: "HostCore",
            dependencies: ["TandemProtocol", .product(name: "TOMLKit", package: "TOMLKit")],
            path: "Sources/HostCore"
        ),
        // The host's services: the controller, its backends, channels, admin socket, metrics, state.
        .target(
            name: "HostController",
            dependencies: [
                "TandemProtocol", "HostCore", "Netlink", "TandemTransport", "TandemDaemon", "TandemLibvirt",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        // The agent's pure core: the shaping tree and its planner, demand, report pacing, the API.
        .target(name: "AgentCore", dependencies: ["TandemProtocol", "Netlink"], path: "Sources/AgentCore"),
        // The agent's services: the agent, its shaper, its socket.
        .target(
            name: "GuestAgent",
            dependencies: [
                "TandemProtocol", "AgentCore", "Netlink", "TandemTransport", "TandemDaemon",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // `tandem-host lab`: the paper's experiment with both daemons in network namespaces.
        .target(
            name: "TandemLab",
            dependencies: ["TandemProtocol", "HostCore", "AgentCore", "TandemTransport", "TandemLabSupport"],
            path: "Sources/Lab"
        ),
        .executableTarget(
            name: "tandem-host",
            dependencies: [
                "HostController", "HostCore", "TandemLab", "TandemTransport", "TandemDaemon",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "tandem-agent",
            dependencies: [
                "GuestAgent", "AgentCore", "TandemTransport", "TandemDaemon",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Shared by the test targets: privilege gating, tc's text output, traffic runs.
        .target(name: "TandemTestSupport", dependencies: ["TandemTransport", "TandemLabSupport", "TandemProtocol", "Netlink"], path: "Tests/Support"),
        // Fuzz targets (scripts/fuzz.sh builds them with -DFUZZING -sanitize=fuzzer,address);
        // in a normal build they replay the corpus files they are given.
        .target(name: "FuzzSupport", path: "Fuzz/FuzzSupport"),
        .executableTarget(name: "fuzz-frames", dependencies: ["FuzzSupport", "TandemProtocol"], path: "Fuzz/fuzz-frames"),
        .executableTarget(name: "fuzz-bitrate", dependencies: ["FuzzSupport", "TandemProtocol"], path: "Fuzz/fuzz-bitrate"),
        .executableTarget(name: "fuzz-agent-api", dependencies: ["FuzzSupport", "AgentCore", "TandemProtocol"], path: "Fuzz/fuzz-agent-api"),
        .executableTarget(name: "fuzz-config", dependencies: ["FuzzSupport", "HostCore"], path: "Fuzz/fuzz-config"),
        .executableTarget(
            name: "fuzz-controller",
            dependencies: ["FuzzSupport", "HostController", "HostCore", "TandemProtocol", "TandemTransport", .product(name: "Logging", package: "swift-log")],
            path: "Fuzz/fuzz-controller"
        ),
        .executableTarget(
            name: "tandem-bench",
            dependencies: [
                "Netlink", "TandemTransport", "TandemDaemon", "TandemLabSupport", "TandemProtocol", "AgentCore", "GuestAgent", "HostCore",
                "HostController", "TandemLab", "TandemLibvirt", .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),

        // Tests, tier by tier: pure cores (no I/O), transport over real sockets, services with
        // fakes, the kernel in namespaces, the binaries end to end, QEMU guests.
        .testTarget(name: "TandemProtocolTests", dependencies: ["TandemProtocol", "TandemTestSupport"]),
        .testTarget(name: "HostCoreTests", dependencies: ["HostCore", "TandemProtocol", "TandemTestSupport"], resources: [.copy("Fixtures")]),
        .testTarget(name: "AgentCoreTests", dependencies: ["AgentCore", "Netlink", "TandemProtocol"]),
        .testTarget(name: "TransportTests", dependencies: ["TandemTransport", "TandemTestSupport"]),
        .testTarget(name: "DaemonTests", dependencies: ["TandemDaemon", "TandemTestSupport", .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "NetlinkTests", dependencies: ["Netlink", "TandemLabSupport", "TandemTestSupport"], resources: [.copy("Fixtures")]),
        .testTarget(name: "HostControllerTests", dependencies: ["HostController", "HostCore", "TandemLibvirt", "TandemTransport", "TandemLabSupport", "TandemTestSupport"]),
        .testTarget(name: "GuestAgentTests", dependencies: ["GuestAgent", "AgentCore", "TandemTransport", "TandemLabSupport", "TandemTestSupport"]),
        .testTarget(name: "DeployTests", dependencies: ["HostController", "HostCore", "TandemLabSupport", "TandemTestSupport"]),
        .testTarget(name: "OperatorTests", dependencies: ["HostController", "HostCore", "TandemProtocol", "TandemLab", "TandemLabSupport", "TandemTestSupport", "TandemTransport"]),
        .testTarget(name: "LabTests", dependencies: ["TandemLab", "HostController", "HostCore", "TandemLabSupport", "TandemTestSupport"]),
        .testTarget(name: "VMTests", dependencies: ["HostController", "HostCore", "Netlink", "TandemLibvirt", "TandemTransport", "TandemLabSupport", "TandemTestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
