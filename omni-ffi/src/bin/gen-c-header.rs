//! Writes the C header of omni-ffi's C API with cbindgen (bindings/regenerate.sh).
//! Usage: gen-c-header <crate-dir> <output.h>

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(crate_dir), Some(out)) = (args.next(), args.next()) else {
        eprintln!("usage: gen-c-header <omni-ffi crate dir> <output.h>");
        std::process::exit(2);
    };
    let config_path = std::path::Path::new(&crate_dir).join("cbindgen.toml");
    let config = match cbindgen::Config::from_file(&config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", config_path.display());
            std::process::exit(1);
        }
    };
    match cbindgen::Builder::new().with_crate(&crate_dir).with_config(config).generate() {
        Ok(b) => {
            b.write_to_file(&out);
        }
        Err(e) => {
            eprintln!("cbindgen: {e}");
            std::process::exit(1);
        }
    }
}
