// swift-tools-version:5.9
// OmniNervous for iOS: a NEPacketTunnelProvider host over omni-ffi.
//
// Build the Rust library first (macOS + Xcode): ./build-xcframework.sh
// It produces OmniFFIRust.xcframework with libomni_ffi.a for iOS devices, the
// simulator and macOS, plus the C headers (uniffi's omni_ffiFFI.h, omni.h).
import PackageDescription

let package = Package(
    name: "OmniNervous",
    platforms: [.iOS(.v15), .macOS(.v12)],
    products: [
        // The generated uniffi bindings (Tunnel, TunnelConfig, keys, errors).
        .library(name: "OmniFFI", targets: ["OmniFFI"]),
        // The packet tunnel provider; subclass or use as the extension's principal class.
        .library(name: "OmniTunnelKit", targets: ["OmniTunnelKit"]),
    ],
    targets: [
        .binaryTarget(name: "OmniFFIRust", path: "OmniFFIRust.xcframework"),
        // Sources/OmniFFI/OmniFFI.swift links to bindings/swift/OmniFFI.swift (regenerated there).
        .target(name: "OmniFFI", dependencies: ["OmniFFIRust"], path: "Sources/OmniFFI"),
        .target(
            name: "OmniTunnelKit",
            dependencies: ["OmniFFI", "OmniFFIRust"],
            path: "Sources/OmniTunnelKit",
            linkerSettings: [.linkedFramework("NetworkExtension"), .linkedFramework("Network")]
        ),
        .testTarget(name: "OmniTunnelKitTests", dependencies: ["OmniFFI", "OmniTunnelKit"], path: "Tests/OmniTunnelKitTests"),
    ]
)
