//! The unprivileged account recipes add beside root: `user` (uid 1000, gid 1000, home
//! `/home/user` owned by it), the user E2B runs commands as by default. Written into the
//! tree's account files directly, never by running the image's own tools on the host.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::store::{err, ioe};
use crate::JailError;

pub const USER: &str = "user";
pub const UID: u32 = 1000;
pub const HOME: &str = "home/user";

/// Adds `user` to `root`'s /etc/passwd, group, and shadow files (those that exist), with its
/// home directory (and /etc/skel's files in it) owned by uid and gid 1000. Refuses a tree
/// where the name or the ids are taken by someone else.
pub(crate) fn add_user(root: &Path, shell: &str) -> Result<(), JailError> {
    let etc = root.join("etc");
    let passwd = fs::read_to_string(etc.join("passwd")).unwrap_or_default();
    let group = fs::read_to_string(etc.join("group")).unwrap_or_default();
    fn taken(text: &str, id_field: usize) -> Option<&str> {
        text.lines().find(|l| {
            let f: Vec<&str> = l.split(':').collect();
            f.first() == Some(&USER) || f.get(id_field) == Some(&"1000")
        })
    }
    if let Some(l) = taken(&passwd, 2).or_else(|| taken(&group, 2)) {
        return Err(err(format!(
            "the image already has {l:?}: cannot add the account {USER} (uid {UID})"
        )));
    }
    let append = |file: &str, line: String| -> Result<(), JailError> {
        let p = etc.join(file);
        let mut text = fs::read_to_string(&p).unwrap_or_default();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&line);
        text.push('\n');
        fs::write(&p, text).map_err(ioe(format!("writing /etc/{file}")))
    };
    append(
        "passwd",
        format!("{USER}:x:{UID}:{UID}:{USER}:/{HOME}:{shell}"),
    )?;
    append("group", format!("{USER}:x:{UID}:"))?;
    if etc.join("shadow").exists() {
        append("shadow", format!("{USER}:*:19000:0:99999:7:::"))?;
    }
    if etc.join("gshadow").exists() {
        append("gshadow", format!("{USER}:!::"))?;
    }
    let home = root.join(HOME);
    fs::create_dir_all(&home).map_err(ioe("creating /home/user"))?;
    let skel = etc.join("skel");
    for e in fs::read_dir(&skel).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_file()) {
            let dst = home.join(e.file_name());
            fs::copy(e.path(), &dst).map_err(ioe(format!("copying {}", e.path().display())))?;
            std::os::unix::fs::lchown(&dst, Some(UID), Some(UID))
                .map_err(ioe("chown /home/user"))?;
        }
    }
    fs::set_permissions(&home, fs::Permissions::from_mode(0o755))
        .map_err(ioe("chmod /home/user"))?;
    std::os::unix::fs::lchown(&home, Some(UID), Some(UID))
        .map_err(ioe("chown /home/user (building an image needs root)"))?;
    Ok(())
}
