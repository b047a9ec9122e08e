//! `bulkhead-agent`: PID 1 of every node. A binary of its own, statically linked, so that a
//! node carries only the agent's code (not the daemon's) and starts it fast. It serves on the
//! listening socket the supervisor hands it as fd 3.

//! In a microVM it is the guest's init (started from the initramfs as `/init`).

fn main() {
    let guest = std::env::args().next().is_some_and(|a| a == "/init");
    if guest && std::process::id() == 1 {
        bulkhead_agent::guest::boot()
    }
    bulkhead_agent::server::serve(3, std::process::id() == 1)
}
