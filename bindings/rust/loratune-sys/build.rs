//! build.rs - links libloratune. Where it is found, in order:
//!   1. $LORATUNE_LIB_DIR (the override: a build tree or any folder holding libloratune.so),
//!      linked with an rpath to it so that tests run without LD_LIBRARY_PATH;
//!   2. pkg-config (`pkg-config --libs loratune`: libloratune-dev, `cmake --install`, or a build
//!      tree's loratune-uninstalled.pc through PKG_CONFIG_PATH), with an rpath to a -L folder
//!      outside the system's default ones;
//!   3. the linker's default path (-lloratune), with a warning saying how to point at it.
use std::env;
use std::process::Command;

fn emit_dir(d: &str, rpath: bool) {
    println!("cargo:rustc-link-search=native={d}");
    if rpath {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{d}");
        // Dependents read it as DEP_LORATUNE_LIB_DIR to add the same rpath to their tests.
        println!("cargo:lib_dir={d}");
    }
}

fn main() {
    for var in ["LORATUNE_LIB_DIR", "PKG_CONFIG_PATH", "PKG_CONFIG_LIBDIR", "PKG_CONFIG_SYSROOT_DIR"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=build.rs");
    if let Some(d) = env::var("LORATUNE_LIB_DIR").ok().filter(|d| !d.is_empty()) {
        emit_dir(&d, true);
        println!("cargo:rustc-link-lib=dylib=loratune");
        return;
    }
    let probe = Command::new("pkg-config").args(["--libs", "loratune"]).output();
    match probe {
        Ok(out) if out.status.success() => {
            let flags = String::from_utf8_lossy(&out.stdout).into_owned();
            for f in flags.split_whitespace() {
                if let Some(d) = f.strip_prefix("-L") {
                    let system = matches!(d, "/usr/lib" | "/lib" | "/usr/lib64" | "/lib64")
                        || d.starts_with("/usr/lib/") && d.matches('/').count() == 3;
                    emit_dir(d, !system);
                } else if let Some(l) = f.strip_prefix("-l") {
                    println!("cargo:rustc-link-lib={l}");
                }
            }
        }
        _ => {
            println!("cargo:warning=libloratune: neither LORATUNE_LIB_DIR nor `pkg-config loratune` \
                      found it; linking -lloratune from the default path (install libloratune-dev, or set \
                      LORATUNE_LIB_DIR=/path/to/build)");
            println!("cargo:rustc-link-lib=dylib=loratune");
        }
    }
}
