//! Builds the fault-injection library the e2e tests preload into the
//! daemon (`faults/eio.c`), and says where it is (`EDDY_EIO_SHIM`).

fn main() {
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let library = out.join("libeddy_eio.so");
    let compiler = cc::Build::new().get_compiler();
    let status = compiler
        .to_command()
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&library)
        .arg("faults/eio.c")
        .arg("-ldl")
        .status()
        .expect("the C compiler runs");
    assert!(status.success(), "faults/eio.c does not compile");
    println!("cargo:rerun-if-changed=faults/eio.c");
    println!("cargo:rustc-env=EDDY_EIO_SHIM={}", library.display());
}
