// The OmniNervous Android library: a VpnService host over omni-ffi.
// Open this directory in Android Studio, or include it in an app build:
//   includeBuild("path/to/android")  /  include(":omni") with projectDir set here.
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}
dependencyResolutionManagement {
    repositories {
        google()
        mavenCentral()
    }
}
rootProject.name = "omninervous-android"
