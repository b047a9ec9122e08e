//! `bulkhead-agent`: PID 1 of every node. A binary of its own, statically linked, so that a
//! node carries only the agent's code (not the daemon's) and starts it fast. It serves on the
//! listening socket the supervisor hands it as fd 3.

fn main() {
    bulkhead_agent::server::serve(3, std::process::id() == 1)
}
