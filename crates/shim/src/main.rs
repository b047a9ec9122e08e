//! `containerd-shim-bulkhead-v2` (#16): containerd's runtime v2 shim, a client of the host's
//! bulkhead daemon. See docs/fleet.md.

fn main() {
    eprintln!("containerd-shim-bulkhead-v2: not built yet");
    std::process::exit(1);
}
