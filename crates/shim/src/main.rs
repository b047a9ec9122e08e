//! `containerd-shim-bulkhead-v2` (#16): containerd's runtime v2 shim (`io.containerd.bulkhead.v2`),
//! a client of the host's bulkhead daemon. See docs/fleet.md.
//!
//! The binary's three actions, as containerd runs them (cwd = the bundle):
//! - `start`: finds or spawns the shim of the task's group (a pod's containers share their
//!   sandbox's shim: `io.kubernetes.cri.sandbox-id`; others group by their own id) and prints
//!   its ttrpc address;
//! - `delete`: after a shim died, removes what `<bundle>/bulkhead.json` names and answers
//!   exit 137 (SIGKILL), as runc's shim does;
//! - otherwise, serve: the task service (`service.rs`) on the socket containerd gave.
//!
//! Why not the crate's `run`: containerd-shim 0.12 speaks only containerd 2.x's task API
//! (`containerd.task.v3.Task`, a JSON start reply), while Debian's containerd 1.6 calls
//! `containerd.task.v2.Task` and reads a bare address. The messages are the same, so this
//! bootstrap serves the crate's task service under both names and answers a bare address
//! (which containerd 2.x takes as a v2 shim too); it uses the crate's `spawn`, logger,
//! publisher, ttrpc server and stdio, and nothing else is hand-written.

mod client;
mod config;
mod events;
mod io;
mod ops;
mod rootfs;
mod service;
mod spec;
mod stats;
mod task;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::shim_async::create_task;
use containerd_shim::protos::ttrpc::r#async::Server;
use containerd_shim::{DeleteResponse, Flags, StartOpts};
use log::{info, warn};

/// containerd's name for this runtime.
pub const RUNTIME: &str = "io.containerd.bulkhead.v2";
/// containerd's environment variable with its ttrpc address (events).
const TTRPC_ADDRESS: &str = "TTRPC_ADDRESS";

fn main() {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{RUNTIME}: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(async {
        match run().await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("{RUNTIME}: {e}");
                1
            }
        }
    });
    std::process::exit(code);
}

async fn run() -> anyhow::Result<()> {
    let args: Vec<_> = std::env::args_os().collect();
    let flags = containerd_shim::parse(&args[1..])?;
    if flags.version {
        println!(
            "containerd-shim-bulkhead-v2 {} ({RUNTIME})",
            env!("CARGO_PKG_VERSION")
        );
        return Ok(());
    }
    if flags.info {
        let info = containerd_shim::protos::types::introspection::RuntimeInfo {
            name: RUNTIME.into(),
            ..Default::default()
        };
        std::io::stdout().write_all(&info.write_to_bytes()?)?;
        return Ok(());
    }
    match flags.action.as_str() {
        "start" => start(&flags).await,
        "delete" => delete(&flags).await,
        _ => serve(&flags).await,
    }
}

fn bundle(flags: &Flags) -> anyhow::Result<PathBuf> {
    Ok(if flags.bundle.is_empty() {
        std::env::current_dir()?
    } else {
        PathBuf::from(&flags.bundle)
    })
}

/// The shim group of a task: its pod's sandbox id, else its own id.
fn grouping(bundle: &Path, id: &str) -> String {
    oci_spec::runtime::Spec::load(bundle.join("config.json"))
        .ok()
        .and_then(|s| {
            s.annotations()
                .as_ref()
                .and_then(|a| a.get(spec::ANN_SANDBOX_ID).cloned())
        })
        .filter(|g| !g.is_empty())
        .unwrap_or_else(|| id.to_string())
}

/// `start`: the group's shim address, spawning the shim when it is not serving yet.
async fn start(flags: &Flags) -> anyhow::Result<()> {
    let bundle = bundle(flags)?;
    let group = grouping(&bundle, &flags.id);
    let opts = StartOpts {
        id: flags.id.clone(),
        publish_binary: flags.publish_binary.clone(),
        address: flags.address.clone(),
        ttrpc_address: std::env::var(TTRPC_ADDRESS).unwrap_or_default(),
        namespace: flags.namespace.clone(),
        debug: flags.debug,
        ..Default::default()
    };
    let address = opts.socket_address(&group);
    let path = address.trim_start_matches("unix://").to_string();
    let serving = std::os::unix::net::UnixStream::connect(&path).is_ok();
    let address = if serving {
        address
    } else {
        let _ = std::fs::remove_file(&path); // a dead shim's socket
        containerd_shim::spawn(opts, &group, Vec::new()).await?
    };
    std::fs::write(bundle.join("address"), &address)?;
    let mut out = std::io::stdout();
    out.write_all(address.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// `delete` after the shim died: remove the record's node or container, answer SIGKILL.
async fn delete(flags: &Flags) -> anyhow::Result<()> {
    let bundle = bundle(flags)?;
    match task::Record::read(&bundle) {
        Ok(Some(r)) => {
            let socket = if r.socket.is_empty() {
                std::env::var(service::BULKHEAD_URL)
                    .unwrap_or_else(|_| config::DEFAULT_SOCKET.into())
            } else {
                r.socket.clone()
            };
            let done = match client::Daemon::new(&socket) {
                Ok(d) if r.standalone => d.delete_node(&r.hostgroup, &r.node).await,
                Ok(d) => d.delete_container(&r.node, &r.container).await,
                Err(e) => Err(e),
            };
            match done {
                Ok(()) => task::Record::remove(&bundle),
                Err(e) => eprintln!("{RUNTIME}: delete {}: {e}", flags.id),
            }
        }
        Ok(None) => {}
        Err(e) => eprintln!("{RUNTIME}: {}: {e}", task::Record::path(&bundle).display()),
    }
    // The dead shim's socket, when nothing answers on it any more.
    if let Ok(address) = std::fs::read_to_string(bundle.join("address")) {
        let path = address.trim().trim_start_matches("unix://");
        if !path.is_empty() && std::os::unix::net::UnixStream::connect(path).is_err() {
            let _ = std::fs::remove_file(path);
        }
    }
    let rootfs = bundle.join("rootfs");
    let _ = tokio::task::spawn_blocking(move || rootfs::unmount_rootfs(&rootfs)).await;
    let resp = DeleteResponse {
        exit_status: 137,
        exited_at: Some(containerd_shim::util::timestamp()?).into(),
        ..Default::default()
    };
    std::io::stdout().write_all(&resp.write_to_bytes()?)?;
    Ok(())
}

/// Serves the task service on `-socket` until Shutdown finds no task left.
async fn serve(flags: &Flags) -> anyhow::Result<()> {
    anyhow::ensure!(!flags.socket.is_empty(), "-socket is required to serve");
    containerd_shim::logger::init(flags.debug, "info", &flags.namespace, &flags.id)?;
    let ttrpc = std::env::var(TTRPC_ADDRESS)?;
    let publisher = containerd_shim::publisher::RemotePublisher::new(&ttrpc).await?;
    let exit = Arc::new(ExitSignal::default());
    let events = events::Events::start(publisher, flags.namespace.clone());
    let svc: Arc<dyn containerd_shim::Task + Send + Sync> = Arc::new(service::Service::new(
        &flags.namespace,
        exit.clone(),
        events,
    ));
    let mut services = create_task(svc.clone());
    // containerd 1.6's name for the same service (see the module's header).
    if let Some(v2) = create_task(svc).remove("containerd.task.v3.Task") {
        services.insert("containerd.task.v2.Task".into(), v2);
    }
    let path = flags.socket.trim_start_matches("unix://");
    if let Some(dir) = Path::new(path).parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut server = Server::new()
        .bind(&flags.socket)?
        .register_service(services);
    server.start().await?;
    // Tell `start` (reading our stdout until it closes) that we serve.
    // SAFETY: dup2 on the process's own standard descriptors; no Rust object owns fd 1.
    if unsafe { libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO) } < 0 {
        warn!("closing stdout: {}", std::io::Error::last_os_error());
    }
    info!("{RUNTIME} serving on {}", flags.socket);
    exit.wait().await;
    info!("shutting down");
    let _ = server.shutdown().await;
    let _ = std::fs::remove_file(path);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pods_containers_group_with_their_sandbox() {
        let d = tempfile::tempdir().unwrap();
        // No config.json: the task's own id.
        assert_eq!(grouping(d.path(), "c1"), "c1");
        let spec = |ann: &str| {
            format!(
                r#"{{"ociVersion":"1.0.2","root":{{"path":"rootfs"}},"annotations":{{{ann}}}}}"#
            )
        };
        std::fs::write(d.path().join("config.json"), spec("")).unwrap();
        assert_eq!(grouping(d.path(), "c1"), "c1");
        std::fs::write(
            d.path().join("config.json"),
            spec(r#""io.kubernetes.cri.sandbox-id":"sb1","io.kubernetes.cri.container-type":"container""#),
        )
        .unwrap();
        assert_eq!(grouping(d.path(), "c1"), "sb1");
    }
}
