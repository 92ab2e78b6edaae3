//! Compiles the C BPF program with clang into OUT_DIR (DESIGN decision 9).

use std::env;
use std::path::PathBuf;
use std::process::Command;

const SOURCES: [&str; 2] = ["src/bpf/acl.bpf.c", "src/bpf/acl.h"];

fn main() {
    for s in SOURCES {
        println!("cargo:rerun-if-changed={s}");
    }
    println!("cargo:rerun-if-env-changed=CLANG");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let obj = out.join("acl.bpf.o");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"])
        .arg("-I/usr/include/x86_64-linux-gnu")
        .args(["-c", "src/bpf/acl.bpf.c", "-o"])
        .arg(&obj)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{clang}` to build the BPF program ({e}): install clang, llvm and \
                 libbpf-dev (run scripts/setup.sh), or point CLANG at a clang binary"
            )
        });
    assert!(
        status.success(),
        "clang failed to compile src/bpf/acl.bpf.c ({status}); libbpf-dev provides \
         <bpf/bpf_helpers.h> (run scripts/setup.sh)"
    );
}
