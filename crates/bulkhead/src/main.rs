//! `bulkhead`: one static binary that is the CLI, the daemon (`up`) and the per-node supervisor
//! (`supervise`, started by the daemon). The in-node agent is `bulkhead-agent`, beside it.

mod cmd;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "bulkhead", version, about = "Run untrusted workloads from many tenants on shared Linux hosts")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print a tenant config (Slicer's YAML shape) for `bulkhead up`
    New(cmd::new::NewArgs),
    /// Run the daemon for the tenant a config describes
    Up {
        config: PathBuf,
        /// State directory (default: config.state_dir, else /var/lib/bulkhead)
        #[arg(long, env = "BULKHEAD_STATE_DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Check a config without starting anything
    Validate { config: PathBuf },
    /// Work with nodes through a running daemon
    #[command(subcommand)]
    Vm(cmd::vm::VmCmd),
    /// Build or import root filesystem images
    #[command(subcommand)]
    Image(cmd::image::ImageCmd),
    /// (internal) supervise one node; started by the daemon
    #[command(hide = true)]
    Supervise { spec: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        // The supervisor must stay single-threaded: it clones the node's init without exec.
        Cmd::Supervise { spec } => ExitCode::from(bulkhead_jail::supervisor::run(&spec) as u8),
        cmd => {
            let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("bulkhead: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(run(cmd)) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("bulkhead: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn run(cmd: Cmd) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::New(a) => cmd::new::run(a),
        Cmd::Up { config, state_dir } => cmd::up::run(&config, state_dir).await,
        Cmd::Validate { config } => cmd::up::validate(&config),
        Cmd::Vm(c) => cmd::vm::run(c).await,
        Cmd::Image(c) => cmd::image::run(c),
        Cmd::Supervise { .. } => unreachable!("handled before the runtime starts"),
    }
}
