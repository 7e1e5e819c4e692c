//! build.rs - gives this crate's tests and examples the same rpath as loratune-sys
//! (DEP_LORATUNE_LIB_DIR comes from loratune-sys's `links = "loratune"`).
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_LORATUNE_LIB_DIR");
    if let Ok(dir) = std::env::var("DEP_LORATUNE_LIB_DIR") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
