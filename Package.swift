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
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.1.0"),
        .package(url: "https://github.com/LebJe/TOMLKit.git", from: "0.6.0"),
    ],
    targets: [
        // Pure: messages, framing, validation, units. No I/O.
        .target(name: "TandemProtocol", path: "Sources/Protocol"),

        // libnl-3 / libnl-route-3 through pkg-config, plus static inline shims for macros.
        .systemLibrary(
            name: "CNetlink",
            path: "Sources/CNetlink",
            pkgConfig: "libnl-route-3.0",
            providers: [.apt(["libnl-3-dev", "libnl-route-3-dev"])]
        ),
        // The kernel's struct tcp_info and inet_diag layouts (they clash with glibc's).
        .target(name: "CKernel", path: "Sources/CKernel"),

        .target(
            name: "Netlink",
            dependencies: ["CNetlink", "CKernel", "TandemProtocol"],
            path: "Sources/Netlink"
        ),
        .target(
            name: "TandemRuntime",
            dependencies: [
                "TandemProtocol", "CKernel",
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/Runtime"
        ),
        .target(
            name: "HostController",
            dependencies: [
                "TandemProtocol", "Netlink", "TandemRuntime",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "TOMLKit", package: "TOMLKit"),
            ]
        ),
        .target(
            name: "GuestAgent",
            dependencies: [
                "TandemProtocol", "Netlink", "TandemRuntime",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "tandem-host",
            dependencies: [
                "HostController", "TandemRuntime",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "tandem-agent",
            dependencies: [
                "GuestAgent", "TandemRuntime",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Shared by the test targets: privilege gating, tc's text output, traffic runs.
        .target(name: "TandemTestSupport", dependencies: ["TandemRuntime", "TandemProtocol"], path: "Tests/Support"),
        // Fuzz targets (scripts/fuzz.sh builds them with -DFUZZING -sanitize=fuzzer,address);
        // in a normal build they replay the corpus files they are given.
        .target(name: "FuzzSupport", path: "Fuzz/FuzzSupport"),
        .executableTarget(name: "fuzz-frames", dependencies: ["FuzzSupport", "TandemProtocol"], path: "Fuzz/fuzz-frames"),
        .executableTarget(name: "fuzz-bitrate", dependencies: ["FuzzSupport", "TandemProtocol"], path: "Fuzz/fuzz-bitrate"),
        .executableTarget(name: "fuzz-agent-api", dependencies: ["FuzzSupport", "GuestAgent", "TandemProtocol", "TandemRuntime"], path: "Fuzz/fuzz-agent-api"),
        .executableTarget(name: "fuzz-config", dependencies: ["FuzzSupport", "HostController"], path: "Fuzz/fuzz-config"),
        .executableTarget(name: "tandem-bench", dependencies: ["Netlink", "TandemRuntime", "TandemProtocol", "GuestAgent", "HostController"]),
        .testTarget(name: "TandemProtocolTests", dependencies: ["TandemProtocol"]),
        .testTarget(name: "RuntimeTests", dependencies: ["TandemRuntime"]),
        .testTarget(name: "NetlinkTests", dependencies: ["Netlink", "TandemRuntime", "TandemTestSupport"], resources: [.copy("Fixtures")]),
        .testTarget(name: "DeployTests", dependencies: ["HostController", "TandemRuntime", "TandemTestSupport"]),
        .testTarget(name: "VMTests", dependencies: ["HostController", "TandemRuntime", "TandemTestSupport"]),
        .testTarget(name: "HostControllerTests", dependencies: ["HostController", "TandemRuntime", "TandemTestSupport"]),
        .testTarget(name: "GuestAgentTests", dependencies: ["GuestAgent", "TandemRuntime", "TandemTestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
