//! build.rs - links libloratune: from $LORATUNE_LIB_DIR (with an rpath, so tests run from the
//! build tree), else from `pkg-config --libs-only-L loratune`, else the system's library path.
use std::env;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=LORATUNE_LIB_DIR");
    println!("cargo:rerun-if-changed=build.rs");
    let mut dir = env::var("LORATUNE_LIB_DIR").ok().filter(|d| !d.is_empty());
    if dir.is_none() {
        if let Ok(out) = Command::new("pkg-config").args(["--libs-only-L", "loratune"]).output() {
            if out.status.success() {
                let s = String::from_utf8_lossy(&out.stdout);
                dir = s.split_whitespace().find_map(|f| f.strip_prefix("-L").map(str::to_owned));
            }
        }
    }
    if let Some(d) = &dir {
        println!("cargo:rustc-link-search=native={d}");
        println!("cargo:rustc-link-arg=-Wl,-rpath,{d}");
        // Dependents read it as DEP_LORATUNE_LIB_DIR to add the same rpath to their tests.
        println!("cargo:lib_dir={d}");
    }
    println!("cargo:rustc-link-lib=dylib=loratune");
}
