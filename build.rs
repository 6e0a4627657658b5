//! Link-time layout of the `bitrush` binary (Linux x86-64, where rustc links with its lld).
//!
//! - Code order: the functions in `scripts/symbol-order.txt` (what a daemon and a download run,
//!   written by `scripts/symbol-order`) go first, together. The kernel maps code in 64 KiB
//!   windows around each page run, so code run from all over the binary makes nearly all of it
//!   resident; packed, it takes a third as much. The names carry a hash of the build profile:
//!   the list matches the `dist` build and leaves other profiles as they were.
//! - Packed relative relocations (DT_RELR, glibc 2.36): the position-independent binary's
//!   table of pointers to fix at start-up shrinks from 220 KB, read in full at every start, to
//!   a few KB.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=scripts/symbol-order.txt");
    let target = |key: &str| std::env::var(key).unwrap_or_default();
    if target("CARGO_CFG_TARGET_OS") != "linux"
        || target("CARGO_CFG_TARGET_ENV") != "gnu"
        || target("CARGO_CFG_TARGET_ARCH") != "x86_64"
    {
        return;
    }
    let list = std::path::Path::new(&target("CARGO_MANIFEST_DIR")).join("scripts/symbol-order.txt");
    println!(
        "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
        list.display()
    );
    // Names of other profiles, and of functions gone since the list was written, are expected
    // misses (`scripts/symbol-order --check` measures them on the dist build).
    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
}
