//! `bulkhead image build minimal | import | list`.

use anyhow::bail;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum ImageCmd {
    /// Build an image from local packages: `minimal` (from busybox-static) or `kernel` (the
    /// microVM guest kernel and modules, from Debian's linux-image package)
    Build {
        name: String,
        /// For `kernel`: a linux-image .deb to use instead of `apt-get download`
        #[arg(long)]
        deb: Option<PathBuf>,
        #[arg(long, env = "BULKHEAD_STATE_DIR", default_value = bulkhead_daemon::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
    /// Import a root filesystem from a directory, .tar or .tar.gz
    Import {
        source: PathBuf,
        #[arg(long)]
        name: String,
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
            state_dir,
        } => {
            if name == "kernel" {
                let k = bulkhead_vm::kernel::build(&state_dir, deb.as_deref())?;
                println!(
                    "built guest kernel {} from {} ({})",
                    k.release,
                    k.package,
                    k.vmlinux.display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            if deb.is_some() {
                bail!("--deb applies to `bulkhead image build kernel` only");
            }
            if name != "minimal" {
                bail!("unknown image recipe {name:?}: bulkhead builds `minimal` and `kernel`; import others with `bulkhead image import`");
            }
            let m = bulkhead_jail::image::build_minimal(
                &state_dir,
                Path::new(bulkhead_jail::image::BUSYBOX),
            )?;
            println!("built image {} ({})", m.name, m.id);
        }
        ImageCmd::Import {
            source,
            name,
            state_dir,
        } => {
            let m = bulkhead_jail::image::import(&state_dir, &name, &source)?;
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
