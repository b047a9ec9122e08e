//! `containerd-shim-bulkhead-v2` (#16): containerd's runtime v2 shim, a client of the host's
//! bulkhead daemon. See docs/fleet.md.

// A2's modules (config, spec, rootfs); allowed dead until the service uses them.
#[allow(dead_code)]
mod config;
#[allow(dead_code)]
mod rootfs;
#[allow(dead_code)]
mod spec;

fn main() {
    eprintln!("containerd-shim-bulkhead-v2: not built yet");
    std::process::exit(1);
}
