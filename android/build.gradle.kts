// Android library module: the VpnService host (src/main/kotlin), the JNI packet
// path class (src/main/java), the uniffi Kotlin bindings (../bindings/kotlin),
// and the Rust library built by ./build-rust.sh into src/main/jniLibs.
plugins {
    id("com.android.library") version "8.5.2"
    id("org.jetbrains.kotlin.android") version "2.0.20"
}

android {
    namespace = "net.omninervous.android"
    compileSdk = 34

    defaultConfig {
        minSdk = 24 // registerDefaultNetworkCallback, Doze broadcasts
        consumerProguardFiles("consumer-rules.pro")
        ndk {
            abiFilters += listOf("arm64-v8a", "armeabi-v7a", "x86_64")
        }
    }

    sourceSets["main"].apply {
        kotlin.srcDir("../bindings/kotlin")
        jniLibs.srcDir("src/main/jniLibs")
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    kotlinOptions {
        jvmTarget = "17"
    }
}

dependencies {
    // The uniffi bindings call the library through JNA (the Android flavour ships its .so files).
    implementation("net.java.dev.jna:jna:5.14.0@aar")
}

// Rebuild the Rust library before packaging (needs cargo-ndk and the NDK).
val buildRust by tasks.registering(Exec::class) {
    workingDir = projectDir
    commandLine("bash", "build-rust.sh")
}
tasks.matching { it.name.startsWith("merge") && it.name.endsWith("JniLibFolders") }.configureEach {
    dependsOn(buildRust)
}
