//! `bulkhead image build minimal|debian|kernel | import | list`. The recipes and the store are
//! `bulkhead_jail::image`; this verb parses, shows progress (one redrawn line on a terminal,
//! a line per stage otherwise) and prints what the store says.

use anyhow::bail;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum ImageCmd {
    /// Build an image from packages: `minimal` (from the host's busybox-static), `debian`
    /// (Debian 12 with bash and python3, with debootstrap from the mirror the host's apt uses)
    /// or `kernel` (the microVM guest kernel and modules, from Debian's linux-image package)
    Build {
        name: String,
        /// For `kernel`: a linux-image .deb to use instead of `apt-get download`
        #[arg(long)]
        deb: Option<PathBuf>,
        /// For `debian`: the Debian mirror to use instead of the host apt's (URL)
        #[arg(long)]
        mirror: Option<String>,
        #[arg(long, env = "BULKHEAD_STATE_DIR", default_value = bulkhead_daemon::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
    /// Import an image: a root filesystem (directory, .tar or .tar.gz), an OCI image layout
    /// (a directory with `oci-layout`), an OCI archive or a docker archive (`docker save`)
    Import {
        source: PathBuf,
        #[arg(long)]
        name: String,
        /// Which image of an OCI layout or archive that holds several (its ref name or tag)
        #[arg(long = "ref")]
        oci_ref: Option<String>,
        #[arg(long, env = "BULKHEAD_STATE_DIR", default_value = bulkhead_daemon::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
    /// List images in the store
    List {
        #[arg(long, env = "BULKHEAD_STATE_DIR", default_value = bulkhead_daemon::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
}

pub fn run(c: ImageCmd) -> anyhow::Result<ExitCode> {
    match c {
        ImageCmd::Build {
            name,
            deb,
            mirror,
            state_dir,
        } => {
            if deb.is_some() && name != "kernel" {
                bail!("--deb applies to `bulkhead image build kernel` only");
            }
            if mirror.is_some() && name != "debian" {
                bail!("--mirror applies to `bulkhead image build debian` only");
            }
            match name.as_str() {
                "kernel" => {
                    let k = bulkhead_vm::kernel::build(&state_dir, deb.as_deref())?;
                    println!(
                        "built guest kernel {} from {} ({})",
                        k.release,
                        k.package,
                        k.vmlinux.display()
                    );
                }
                "minimal" => {
                    let m = bulkhead_jail::image::build_minimal(
                        &state_dir,
                        Path::new(bulkhead_jail::image::BUSYBOX),
                    )?;
                    println!("built image {} ({})", m.name, m.id);
                }
                "debian" => {
                    use bulkhead_jail::image::debian;
                    let mirror = debian::mirror(mirror.as_deref())?;
                    eprintln!(
                        "building the debian image: Debian {} from {} ({})",
                        debian::SUITE,
                        mirror.uri,
                        mirror.from
                    );
                    let mut shown = Shown::new();
                    let r = debian::build(&state_dir, "debian", &mirror, &mut |p| shown.show(&p));
                    shown.done();
                    let (m, warnings) = r?;
                    warn(&warnings);
                    println!("built image {} ({})", m.name, m.id);
                }
                _ => bail!("unknown image recipe {name:?}: bulkhead builds `minimal`, `debian` and `kernel`; import others with `bulkhead image import`"),
            }
        }
        ImageCmd::Import {
            source,
            name,
            oci_ref,
            state_dir,
        } => {
            let (m, warnings) =
                bulkhead_jail::image::import(&state_dir, &name, &source, oci_ref.as_deref())?;
            warn(&warnings);
            println!(
                "imported image {} ({}) from {}",
                m.name,
                m.id,
                source.display()
            );
        }
        ImageCmd::List { state_dir } => {
            println!("{:<20} {:<18} SOURCE", "NAME", "ID");
            for m in bulkhead_jail::image::list(&state_dir) {
                println!("{:<20} {:<18} {}", m.name, m.id, m.source);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn warn(warnings: &[String]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}

/// The progress display on stderr: on a terminal one line redrawn in place (percentage,
/// stage, detail, cut to the terminal's width); otherwise a line per stage.
struct Shown {
    tty: bool,
    drawn: bool,
}

impl Shown {
    fn new() -> Self {
        Shown {
            tty: std::io::stderr().is_terminal(),
            drawn: false,
        }
    }

    fn show(&mut self, p: &bulkhead_jail::image::debian::Progress) {
        let mut err = std::io::stderr().lock();
        if !self.tty {
            if p.new_stage {
                let _ = writeln!(err, "[{:>3}%] {}", p.percent, p.stage);
            }
            return;
        }
        let mut line = format!("[{:>3}%] {}", p.percent, p.stage);
        if let Some(d) = &p.detail {
            line.push_str(": ");
            line.push_str(d);
        }
        let width = columns().saturating_sub(1).max(20);
        let line: String = line.chars().take(width).collect();
        let _ = write!(err, "\r\x1b[K{line}");
        let _ = err.flush();
        self.drawn = true;
    }

    /// Ends the redrawn line, so what follows starts on its own.
    fn done(&mut self) {
        if self.drawn {
            eprintln!();
            self.drawn = false;
        }
    }
}

/// The terminal's width on stderr (80 when it does not say).
fn columns() -> usize {
    // SAFETY: winsize is plain data; TIOCGWINSZ fills it or fails, on an fd we do not own
    // but only query.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: as above; fd 2 stays open for the process's life.
    let ok = unsafe { libc::ioctl(2, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 {
        ws.ws_col as usize
    } else {
        80
    }
}
