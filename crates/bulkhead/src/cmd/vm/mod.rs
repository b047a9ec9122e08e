//! `bulkhead vm ...`: the client side of the node API. `exec` and `cp` stream, and live in
//! modules of their own; the other verbs are one request each.

mod bg;
mod conn;
mod cp;
mod exec;
mod fs;
mod lifecycle;
mod shell;
mod stats;
mod tunnel;

use anyhow::{bail, Context};
use bulkhead_api::client::{enc, full_body};
use bulkhead_api::{CreateNodeRequest, CreatedNode, Node};
use bytes::Bytes;
use hyper::Method;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

pub use conn::Conn;
pub use exec::ExecArgs;

#[derive(clap::Subcommand)]
pub enum VmCmd {
    /// List nodes
    List {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        tag: Option<String>,
        #[arg(long)]
        tag_prefix: Option<String>,
    },
    /// Create a node in a host group
    Add {
        #[command(flatten)]
        conn: Conn,
        group: String,
        #[arg(long)]
        hostname: Option<String>,
        /// key=value (repeatable)
        #[arg(long)]
        tag: Vec<String>,
        #[arg(long)]
        cpus: Option<u32>,
        #[arg(long)]
        ram_gb: Option<u64>,
        #[arg(long)]
        persistent: bool,
        /// The node's address (isolated/bridge groups), default the first free one
        #[arg(long)]
        ip: Option<String>,
        /// Narrow the group's egress allow list for this node (CIDR, repeatable)
        #[arg(long)]
        allow: Vec<String>,
        /// Extra CIDR this node may not reach (repeatable)
        #[arg(long)]
        drop: Vec<String>,
        /// A script the node runs once as root at its first start
        #[arg(long)]
        userdata_file: Option<PathBuf>,
        /// Return only once the node's agent answers (and its userdata has run)
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        wait: bool,
        /// How long to wait, e.g. 30s
        #[arg(long, default_value = "5m")]
        timeout: String,
        /// The node's lifetime: deleted once it passes, e.g. 30m, 1h30m or 1800 (seconds;
        /// 1s to 30 days; the create body's "timeout", #15)
        #[arg(long)]
        ttl: Option<String>,
    },
    /// Delete a node
    Delete {
        #[command(flatten)]
        conn: Conn,
        nodes: Vec<String>,
    },
    /// Run a command in a node; exits with the command's exit code
    Exec {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        args: ExecArgs,
    },
    /// Background execs: list, info, logs, kill, wait, rm (start one with `vm exec --bg`)
    Bg {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: bg::BgCmd,
    },
    /// Copy files: `cp ./dir NODE:/path` or `cp NODE:/path ./dir` (directories as tar)
    ///
    /// Downloading a directory recreates the node's symlinks as they are, so a link to an
    /// absolute path (`/etc/passwd`) points at this machine's file; nothing is ever written
    /// through a symlink or outside DST, and a note on stderr counts links that point outside
    /// DST. `--no-symlinks` skips symlinks instead.
    Cp {
        #[command(flatten)]
        conn: Conn,
        src: String,
        dst: String,
        #[arg(long)]
        uid: Option<u32>,
        #[arg(long)]
        gid: Option<u32>,
        /// Downloads: skip the node's symlinks (each is named on stderr)
        #[arg(long)]
        no_symlinks: bool,
    },
    /// A node's file system: `fs ls|stat|mkdir|rm|watch NODE PATH`
    Fs {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: fs::FsCmd,
    },
    /// Print a node's console log
    Logs {
        #[command(flatten)]
        conn: Conn,
        node: String,
    },
    /// Check that a node's agent answers
    Health {
        #[command(flatten)]
        conn: Conn,
        node: String,
    },
    /// Commit a node's root filesystem as a tenant-private image; prints its id (#13)
    Commit {
        #[command(flatten)]
        conn: Conn,
        node: String,
    },
    /// Pause a node (microVM: vCPUs stop; jail: cgroup freezer)
    Pause {
        #[command(flatten)]
        conn: Conn,
        node: String,
    },
    /// Resume a paused node
    Resume {
        #[command(flatten)]
        conn: Conn,
        node: String,
    },
    /// Open a host port to a node port: `forward NODE HOST_PORT:NODE_PORT` (the daemon
    /// listens), or `forward NODE -L SPEC` (this command listens and carries each connection
    /// over the `forward` WebSocket until interrupted)
    Forward {
        #[command(flatten)]
        conn: Conn,
        node: String,
        /// HOST_PORT:NODE_PORT (HOST_PORT 0 picks a free port)
        #[arg(required_unless_present = "local", conflicts_with = "local")]
        ports: Option<String>,
        /// Listen here: PORT, HOST:PORT, LPORT:HOST:PORT or LHOST:LPORT:HOST:PORT (repeatable)
        #[arg(short = 'L', long = "local")]
        local: Vec<String>,
        /// Host address to listen on
        #[arg(long, default_value = "127.0.0.1")]
        bind: String,
        /// Accept a PROXY protocol v2 header from --trusted-proxy peers
        #[arg(long)]
        proxy_protocol: bool,
        /// CIDR of an upstream whose PROXY header is honoured (repeatable)
        #[arg(long)]
        trusted_proxy: Vec<String>,
    },
    /// An interactive shell in a node (a terminal over the `shell` WebSocket); exits with
    /// the shell's exit status
    Shell {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        args: shell::ShellArgs,
    },
    /// What nodes use now: CPU, memory, processes, network, disk
    Stats {
        #[command(flatten)]
        conn: Conn,
        /// One node (default: all)
        node: Option<String>,
    },
    /// List a node's port forwards
    Forwards {
        #[command(flatten)]
        conn: Conn,
        node: String,
    },
    /// Close a node's port forward on HOST_PORT
    Unforward {
        #[command(flatten)]
        conn: Conn,
        node: String,
        host_port: u16,
    },
    #[command(flatten)]
    Lifecycle(lifecycle::LifecycleCmd),
}

pub async fn run(c: VmCmd) -> anyhow::Result<ExitCode> {
    match c {
        VmCmd::List {
            conn,
            tag,
            tag_prefix,
        } => {
            let mut path = "/nodes".to_string();
            if let Some(t) = tag {
                path += &format!("?tag={}", enc(&t));
            } else if let Some(p) = tag_prefix {
                path += &format!("?tag_prefix={}", enc(&p));
            }
            let nodes: Vec<Node> = conn.client()?.get(&path).await?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&nodes)?);
            } else {
                println!(
                    "{:<24} {:<12} {:<9} {:>5} {:>10}  {:<21} TAGS",
                    "HOSTNAME", "GROUP", "STATUS", "CPUS", "RAM_MB", "CREATED"
                );
                for n in nodes {
                    println!(
                        "{:<24} {:<12} {:<9} {:>5} {:>10}  {:<21} {}",
                        n.hostname,
                        n.hostgroup,
                        n.status.as_str(),
                        n.cpus,
                        n.ram_bytes >> 20,
                        n.created_at,
                        n.tags.join(",")
                    );
                }
            }
        }
        VmCmd::Add {
            conn,
            group,
            hostname,
            tag,
            cpus,
            ram_gb,
            persistent,
            ip,
            allow,
            drop,
            userdata_file,
            wait,
            timeout,
            ttl,
        } => {
            // #15, B: node TTL, checked here so the error names --ttl
            if let Some(t) = &ttl {
                bulkhead_core::ttl::parse_str("--ttl", t)?;
            }
            let userdata = userdata_file
                .map(|p| {
                    std::fs::read_to_string(&p)
                        .with_context(|| format!("reading userdata {}", p.display()))
                })
                .transpose()?;
            let network = (!allow.is_empty() || !drop.is_empty())
                .then_some(bulkhead_api::NodeNetworkRequest { allow, drop });
            let req = CreateNodeRequest {
                hostname,
                cpus,
                ram_bytes: ram_gb.map(|g| g << 30),
                persistent,
                tags: tag,
                ip,
                network,
                userdata: userdata.clone(),
                timeout: ttl.map(bulkhead_api::ttl::NodeTimeout::Text), // #15, B
                ..Default::default()
            };
            let q = if wait {
                let what = if userdata.is_some() {
                    "userdata"
                } else {
                    "agent"
                };
                format!("?wait={what}&timeout={}", enc(&timeout))
            } else {
                String::new()
            };
            let n: CreatedNode = conn
                .client()?
                .json(
                    Method::POST,
                    &format!("/hostgroup/{}/nodes{q}", enc(&group)),
                    Some(&serde_json::to_value(&req)?),
                )
                .await?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&n)?);
            } else {
                println!("{}", n.hostname);
            }
        }
        VmCmd::Delete { conn, nodes } => {
            if nodes.is_empty() {
                bail!("name the node(s) to delete");
            }
            let client = conn.client()?;
            for name in nodes {
                let n = client.find_node(&name).await?;
                let _: serde_json::Value = client
                    .json(
                        Method::DELETE,
                        &format!("/hostgroup/{}/nodes/{}", enc(&n.hostgroup), enc(&name)),
                        None,
                    )
                    .await?;
                println!("deleted {name}");
            }
        }
        VmCmd::Exec { conn, args } => {
            return exec::exec(&conn.client()?, args).await;
        }
        VmCmd::Bg { conn, cmd } => return bg::run(&conn.client()?, conn.json, cmd).await,
        VmCmd::Cp {
            conn,
            src,
            dst,
            uid,
            gid,
            no_symlinks,
        } => cp::cp(&conn.client()?, &src, &dst, uid, gid, no_symlinks).await?,
        VmCmd::Fs { conn, cmd } => fs::run(&conn.client()?, cmd, conn.json).await?,
        VmCmd::Logs { conn, node } => {
            let l: bulkhead_api::NodeLogs = conn
                .client()?
                .get(&format!("/vm/{}/logs", enc(&node)))
                .await?;
            std::io::stdout().write_all(l.content.as_bytes())?;
        }
        VmCmd::Health { conn, node } => {
            let h: bulkhead_api::Health = conn
                .client()?
                .get(&format!("/vm/{}/health", enc(&node)))
                .await?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&h)?);
            } else {
                let secs = |ns: u64| ns as f64 / 1e9;
                println!("hostname:       {}", h.hostname);
                println!("agent:          {} (version {})", h.agent, h.agent_version);
                println!("agent_uptime:   {:.1}s", secs(h.agent_uptime));
                println!("system_uptime:  {:.1}s", secs(h.system_uptime));
                match h.userdata_exit_code {
                    Some(c) => println!("userdata_ran:   {} (exit code {c})", h.userdata_ran),
                    None => println!("userdata_ran:   {}", h.userdata_ran),
                }
            }
        }
        VmCmd::Shell { conn, args } => return shell::shell(&conn.client()?, args).await,
        VmCmd::Stats { conn, node } => {
            stats::stats(&conn.client()?, node.as_deref(), conn.json).await?
        }
        VmCmd::Forward {
            conn, node, local, ..
        } if !local.is_empty() => return tunnel::forward(&conn.client()?, &node, &local).await,
        VmCmd::Forward {
            conn,
            node,
            ports,
            bind,
            proxy_protocol,
            trusted_proxy,
            ..
        } => {
            let ports = ports.unwrap_or_default();
            let (h, n) = ports
                .split_once(':')
                .and_then(|(h, n)| Some((h.parse::<u16>().ok()?, n.parse::<u16>().ok()?)))
                .with_context(|| format!("{ports:?} is not HOST_PORT:NODE_PORT, e.g. 8080:80"))?;
            let req = bulkhead_api::ForwardRequest {
                host_port: h,
                node_port: n,
                bind: Some(bind),
                proxy_protocol,
                trusted_proxies: trusted_proxy,
            };
            let f: bulkhead_api::Forward = conn
                .client()?
                .json(
                    Method::POST,
                    &format!("/vm/{}/forwards", enc(&node)),
                    Some(&serde_json::to_value(&req)?),
                )
                .await?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&f)?);
            } else {
                println!("{} -> {node}:{}", f.listen, f.node_port);
            }
        }
        VmCmd::Commit { conn, node } => return super::commit::commit_node(conn, &node).await, // #13
        VmCmd::Pause { conn, node } => {
            conn.client()?
                .send_ok(
                    Method::POST,
                    &format!("/vm/{}/pause", enc(&node)),
                    full_body(Bytes::new()),
                    None,
                )
                .await?;
            println!("paused {node}");
        }
        VmCmd::Resume { conn, node } => {
            conn.client()?
                .send_ok(
                    Method::POST,
                    &format!("/vm/{}/resume", enc(&node)),
                    full_body(Bytes::new()),
                    None,
                )
                .await?;
            println!("resumed {node}");
        }
        VmCmd::Forwards { conn, node } => {
            let fs: Vec<bulkhead_api::Forward> = conn
                .client()?
                .get(&format!("/vm/{}/forwards", enc(&node)))
                .await?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&fs)?);
            } else {
                println!(
                    "{:<22} {:>9} {:>6} {:>11}  LAST_CLIENT",
                    "LISTEN", "NODE_PORT", "PROXY", "CONNECTIONS"
                );
                for f in fs {
                    println!(
                        "{:<22} {:>9} {:>6} {:>11}  {}",
                        f.listen,
                        f.node_port,
                        if f.proxy_protocol { "v2" } else { "-" },
                        f.connections,
                        f.last_client.as_deref().unwrap_or("-")
                    );
                }
            }
        }
        VmCmd::Unforward {
            conn,
            node,
            host_port,
        } => {
            conn.client()?
                .send_ok(
                    Method::DELETE,
                    &format!("/vm/{}/forwards/{host_port}", enc(&node)),
                    full_body(Bytes::new()),
                    None,
                )
                .await?;
            println!("closed {node} forward on host port {host_port}");
        }
        VmCmd::Lifecycle(c) => lifecycle::run(c).await?,
    }
    Ok(ExitCode::SUCCESS)
}
