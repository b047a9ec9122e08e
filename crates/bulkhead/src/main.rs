//! `bulkhead`: the CLI and the daemon (`up`). Beside it ship `bulkhead-supervisor` (one per
//! node, started by the daemon) and `bulkhead-agent` (PID 1 of every node).

mod cmd;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "bulkhead",
    version,
    about = "Run untrusted workloads from many tenants on shared Linux hosts"
)]
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
    /// API tokens: create (prints the secret once), list, revoke
    #[command(subcommand)]
    Token(cmd::token::TokenCmd),
    /// The daemon's workload identity issuer (rotate its signing key)
    #[command(subcommand)]
    Identity(cmd::identity::IdentityCmd),
    /// Each tenant's use against its quotas (nodes, vcpu, ram, storage)
    Quota(cmd::quota::QuotaArgs),
    /// The tenant's secrets: create, list, update, delete (#13)
    #[command(subcommand)]
    Secret(cmd::secret::SecretCmd),
    /// The host keyring: rotate the master key (#13)
    #[command(subcommand)]
    Keys(cmd::keys::KeysCmd),
    /// Volumes: create, list, show, delete (#13)
    #[command(subcommand)]
    Volume(cmd::volume::VolumeCmd),
    /// Commits of nodes' root filesystems: list, delete, fork (#13; make one with `vm commit`)
    #[command(subcommand)]
    Commit(cmd::commit::CommitCmd),
    /// What the tenants' nodes used: node-seconds, CPU, memory, network, storage, execs (#14)
    Usage(cmd::usage::UsageArgs),
    /// The audit trail: verify its files offline (#14)
    #[command(subcommand)]
    Audit(cmd::audit::AuditCmd),
    /// containerd's shim for Kubernetes: install it and its runtime config (#16, docs/fleet.md)
    #[command(subcommand)]
    Shim(cmd::shim::ShimCmd),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bulkhead: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.cmd)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bulkhead: {e:#}");
            ExitCode::FAILURE
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
        Cmd::Token(c) => cmd::token::run(c).await,
        Cmd::Identity(c) => cmd::identity::run(c).await,
        Cmd::Quota(a) => cmd::quota::run(a).await, // quotas (#12)
        Cmd::Secret(c) => cmd::secret::run(c).await, // secrets (#13)
        Cmd::Keys(c) => cmd::keys::run(c).await,   // keys (#13)
        Cmd::Volume(c) => cmd::volume::run(c).await, // volumes (#13)
        Cmd::Commit(c) => cmd::commit::run(c).await, // commit and fork (#13)
        Cmd::Usage(a) => cmd::usage::run(a).await, // usage (#14, part E)
        Cmd::Audit(c) => cmd::audit::run(c),       // audit trail (#14, A)
        Cmd::Shim(c) => cmd::shim::run(c),         // shim install (#16, E)
    }
}
