//! Linker scripts for esp-hal (linkall.x) and defmt.
fn main() {
    println!("cargo:rerun-if-env-changed=OMNI_CONFIG");
    println!("cargo:rerun-if-env-changed=OMNI_WIFI_SSID");
    println!("cargo:rerun-if-env-changed=OMNI_WIFI_PASSWORD");
    println!("cargo:rustc-link-arg=-Tlinkall.x");
    println!("cargo:rustc-link-arg=-Tdefmt.x");
}
