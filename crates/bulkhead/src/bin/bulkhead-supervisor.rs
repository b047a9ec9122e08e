//! `bulkhead-supervisor`: supervises one node of any driver (see `bulkhead_driver::supervisor`).
//! Started by the daemon, either for a node at once (`bulkhead-supervisor SPEC`) or ahead of
//! time as a standby that already sits in a fresh cgroup (`bulkhead-supervisor --standby TENANT
//! CGROUP SOCKDIR`, then a spec path on stdin). A small binary of its own because its start-up
//! is part of creating a node. It must stay single-threaded until the node's init is cloned.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let drivers = &bulkhead::drivers::LAUNCHERS;
    let code = match args.as_slice() {
        [flag, tenant, id, dir] if flag == "--standby" => match (tenant.to_str(), id.to_str()) {
            (Some(t), Some(i)) => {
                bulkhead_driver::supervisor::run_standby(t, i, std::path::Path::new(dir), drivers)
            }
            _ => 2,
        },
        [spec] => bulkhead_driver::supervisor::run(std::path::Path::new(spec), drivers),
        _ => {
            eprintln!("usage: bulkhead-supervisor SPEC | --standby TENANT CGROUP SOCKDIR (started by the bulkhead daemon)");
            2
        }
    };
    ExitCode::from(code as u8)
}
