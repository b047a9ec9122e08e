//! `bulkhead vm ...`: the client side of the node API.

use anyhow::{bail, Context};
use bulkhead_api::client::{enc, full_body, ReqBody};
use bulkhead_api::{Client, CreateNodeRequest, CreatedNode, Endpoint, ExecFrame, Node};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Method;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args, Clone)]
pub struct Conn {
    /// The tenant's API socket
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// API address: unix:///path or http://host:port
    #[arg(long, env = "BULKHEAD_URL", global = true, hide_env_values = true)]
    url: Option<String>,
    /// Bearer token for TCP endpoints
    #[arg(long, env = "BULKHEAD_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Print JSON instead of tables
    #[arg(long, global = true)]
    json: bool,
}

impl Conn {
    fn client(&self) -> anyhow::Result<Client> {
        let ep = match (&self.socket, &self.url) {
            (Some(s), _) => Endpoint::Unix(s.clone()),
            (None, Some(u)) => Endpoint::parse(u, self.token.clone())?,
            (None, None) => bail!("say where the daemon is: --socket PATH or BULKHEAD_URL=unix:///run/bulkhead/TENANT.sock"),
        };
        Ok(Client::new(ep))
    }
}

#[derive(clap::Args)]
pub struct ExecArgs {
    node: String,
    /// Send this process's stdin to the command
    #[arg(short, long)]
    interactive: bool,
    #[arg(long, default_value_t = 0)]
    uid: u32,
    #[arg(long, default_value_t = 0)]
    gid: u32,
    #[arg(long)]
    cwd: Option<String>,
    /// KEY=VALUE (repeatable)
    #[arg(long, short)]
    env: Vec<String>,
    /// Kill the command after this long, e.g. 30s
    #[arg(long)]
    timeout: Option<String>,
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

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
        /// Return only once the node's agent answers
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        wait: bool,
        /// How long to wait, e.g. 30s
        #[arg(long, default_value = "5m")]
        timeout: String,
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
    /// Open a host port to a node port: `forward NODE HOST_PORT:NODE_PORT`
    Forward {
        #[command(flatten)]
        conn: Conn,
        node: String,
        /// HOST_PORT:NODE_PORT (HOST_PORT 0 picks a free port)
        ports: String,
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
            wait,
            timeout,
        } => {
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
                ..Default::default()
            };
            let q = if wait {
                format!("?wait=agent&timeout={}", enc(&timeout))
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
            return exec(&conn.client()?, args).await;
        }
        VmCmd::Cp {
            conn,
            src,
            dst,
            uid,
            gid,
            no_symlinks,
        } => cp(&conn.client()?, &src, &dst, uid, gid, no_symlinks).await?,
        VmCmd::Logs { conn, node } => {
            let resp = conn
                .client()?
                .send_ok(
                    Method::GET,
                    &format!("/vm/{}/logs", enc(&node)),
                    full_body(Bytes::new()),
                    None,
                )
                .await?;
            let b = resp.into_body().collect().await?.to_bytes();
            std::io::stdout().write_all(&b)?;
        }
        VmCmd::Health { conn, node } => {
            let h: serde_json::Value = conn
                .client()?
                .get(&format!("/vm/{}/health", enc(&node)))
                .await?;
            println!("{}", serde_json::to_string_pretty(&h)?);
        }
        VmCmd::Forward {
            conn,
            node,
            ports,
            bind,
            proxy_protocol,
            trusted_proxy,
        } => {
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
        VmCmd::Pause { conn, node } => {
            let _: serde_json::Value = conn
                .client()?
                .json(Method::POST, &format!("/vm/{}/pause", enc(&node)), None)
                .await?;
            println!("paused {node}");
        }
        VmCmd::Resume { conn, node } => {
            let _: serde_json::Value = conn
                .client()?
                .json(Method::POST, &format!("/vm/{}/resume", enc(&node)), None)
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
    }
    Ok(ExitCode::SUCCESS)
}

async fn exec(client: &Client, a: ExecArgs) -> anyhow::Result<ExitCode> {
    let ExecArgs {
        node,
        interactive,
        uid,
        gid,
        cwd,
        env,
        timeout,
        command,
    } = a;
    let node = node.as_str();
    // base64 frames: binary output reaches stdout byte for byte.
    let mut q = format!(
        "/vm/{}/exec?cmd={}&uid={uid}&gid={gid}&stdio=base64",
        enc(node),
        enc(&command[0])
    );
    for a in &command[1..] {
        q += &format!("&args={}", enc(a));
    }
    for e in &env {
        q += &format!("&env={}", enc(e));
    }
    if let Some(c) = cwd {
        q += &format!("&cwd={}", enc(&c));
    }
    if let Some(t) = timeout {
        q += &format!("&timeout={}", enc(&t));
    }
    let body: ReqBody = if interactive {
        q += "&stdin=true";
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<hyper::body::Frame<Bytes>, std::io::Error>>(8);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let mut stdin = std::io::stdin().lock();
            loop {
                match std::io::Read::read(&mut stdin, &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tx
                            .blocking_send(Ok(hyper::body::Frame::data(Bytes::copy_from_slice(
                                &buf[..n],
                            ))))
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
        http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed()
    } else {
        full_body(Bytes::new())
    };
    let resp = match client.send_ok(Method::POST, &q, body, None).await {
        Ok(r) => r,
        // The shell's conventions, so scripts can tell "not found" from the command failing.
        Err(e) if matches!(e.code(), Some("command_not_found") | Some("exec_failed")) => {
            eprintln!("bulkhead: {e}");
            return Ok(ExitCode::from(if e.code() == Some("command_not_found") {
                127
            } else {
                126
            }));
        }
        Err(e) => return Err(e.into()),
    };
    let mut body = resp.into_body();
    let mut pending: Vec<u8> = Vec::new();
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    while let Some(frame) = body.frame().await {
        let frame = frame.context("exec stream broke")?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        pending.extend_from_slice(data);
        while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            match serde_json::from_slice::<ExecFrame>(&line).context("malformed exec frame")? {
                ExecFrame::Stdout { data, encoding } => {
                    out.write_all(&output_bytes(data, encoding)?)?;
                    out.flush()?;
                }
                ExecFrame::Stderr { data, encoding } => {
                    err.write_all(&output_bytes(data, encoding)?)?;
                    err.flush()?;
                }
                ExecFrame::Exit {
                    exit_code,
                    signal,
                    timed_out,
                    ..
                } => {
                    if timed_out {
                        eprintln!("bulkhead: command timed out and was killed");
                    }
                    let code = exit_code.unwrap_or_else(|| 128 + signal.unwrap_or(0));
                    return Ok(ExitCode::from(code.clamp(0, 255) as u8));
                }
                ExecFrame::Error { error, code } => bail!("exec failed: {error} ({code})"),
                ExecFrame::Started { .. } => {}
            }
        }
    }
    bail!("exec stream ended without an exit status")
}

/// One output frame's bytes: base64 frames decoded, text as it came.
fn output_bytes(data: String, encoding: Option<String>) -> anyhow::Result<Vec<u8>> {
    use base64::Engine;
    match encoding.as_deref() {
        None | Some("text") => Ok(data.into_bytes()),
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(data)
            .context("exec frame is not valid base64"),
        Some(e) => bail!("exec frame has an unknown encoding {e:?}"),
    }
}

/// `NODE:/path` names a path in a node; anything else is local.
fn remote(s: &str) -> Option<(&str, &str)> {
    let (node, path) = s.split_once(':')?;
    (bulkhead_api::names::validate_label("node", node).is_ok() && path.starts_with('/'))
        .then_some((node, path))
}

async fn cp(
    client: &Client,
    src: &str,
    dst: &str,
    uid: Option<u32>,
    gid: Option<u32>,
    no_symlinks: bool,
) -> anyhow::Result<()> {
    if no_symlinks && remote(src).is_none() {
        bail!("--no-symlinks applies to downloads (cp NODE:/path DEST); uploads never follow local symlinks");
    }
    let owner = uid.map(|u| format!("&uid={u}")).unwrap_or_default()
        + &gid.map(|g| format!("&gid={g}")).unwrap_or_default();
    match (remote(src), remote(dst)) {
        (None, Some((node, path))) => {
            let local = Path::new(src);
            let md = std::fs::metadata(local).with_context(|| format!("cannot read {src}"))?;
            let (mode, body, perm) = if md.is_dir() {
                let mut b = tar::Builder::new(Vec::new());
                b.follow_symlinks(false);
                b.append_dir_all(".", local)
                    .with_context(|| format!("archiving {src}"))?;
                ("tar", b.into_inner()?, String::new())
            } else {
                use std::os::unix::fs::PermissionsExt;
                let perm = format!("&permissions={:o}", md.permissions().mode() & 0o7777);
                (
                    "binary",
                    std::fs::read(local).with_context(|| format!("reading {src}"))?,
                    perm,
                )
            };
            let q = format!(
                "/vm/{}/cp?path={}&mode={mode}{perm}{owner}",
                enc(node),
                enc(path)
            );
            let r: bulkhead_api::CopyInResult = {
                let resp = client
                    .send_ok(
                        Method::POST,
                        &q,
                        full_body(body),
                        Some("application/octet-stream"),
                    )
                    .await?;
                serde_json::from_slice(&resp.into_body().collect().await?.to_bytes())?
            };
            eprintln!("copied {} bytes to {node}:{}", r.bytes, r.path);
        }
        (Some((node, path)), None) => {
            let get =
                |mode: &'static str| format!("/vm/{}/cp?path={}&mode={mode}", enc(node), enc(path));
            match client
                .send_ok(Method::GET, &get("binary"), full_body(Bytes::new()), None)
                .await
            {
                Ok(resp) => {
                    let data = body_bytes(resp).await?;
                    let mut target = PathBuf::from(dst);
                    if target.is_dir() {
                        target.push(
                            Path::new(path)
                                .file_name()
                                .context("remote path has no file name")?,
                        );
                    }
                    std::fs::write(&target, &data)
                        .with_context(|| format!("writing {}", target.display()))?;
                    eprintln!("copied {} bytes to {}", data.len(), target.display());
                }
                Err(e) if e.code() == Some("is_a_directory") => {
                    let resp = client
                        .send_ok(Method::GET, &get("tar"), full_body(Bytes::new()), None)
                        .await?;
                    let data = body_bytes(resp).await?;
                    std::fs::create_dir_all(dst).with_context(|| format!("creating {dst}"))?;
                    let u = super::untar::unpack(&data, Path::new(dst), no_symlinks)
                        .with_context(|| format!("unpacking into {dst}"))?;
                    super::untar::report(&u, dst);
                    eprintln!("copied {node}:{path} to {dst}");
                }
                Err(e) => return Err(e.into()),
            }
        }
        (Some(_), Some(_)) => bail!("copy between two nodes is not supported: copy out, then in"),
        (None, None) => bail!("one side must be NODE:/absolute/path"),
    }
    Ok(())
}

/// Reads a whole response body; a body that breaks off is an error, never a short file.
async fn body_bytes(resp: hyper::Response<hyper::body::Incoming>) -> anyhow::Result<Bytes> {
    Ok(resp
        .into_body()
        .collect()
        .await
        .context("copy broke off")?
        .to_bytes())
}
