//! `bulkhead-supervisor SPEC`: supervises one node (see `bulkhead_jail::supervisor`). Started
//! by the daemon for every node; a small binary of its own because its start-up time is part
//! of every node's creation. It must stay single-threaded: it clones the node's init without
//! exec.

fn main() -> std::process::ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(spec), None) = (args.next(), args.next()) else {
        eprintln!("usage: bulkhead-supervisor SPEC (started by the bulkhead daemon)");
        return std::process::ExitCode::from(2);
    };
    std::process::ExitCode::from(bulkhead_jail::supervisor::run(std::path::Path::new(&spec)) as u8)
}
