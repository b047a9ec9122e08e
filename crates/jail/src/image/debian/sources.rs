//! The Debian mirror the host's apt uses, read from `/etc/apt/sources.list` and
//! `/etc/apt/sources.list.d/*.list` (one-line format) and `*.sources` (deb822): the first
//! enabled `deb` entry for Debian's main archive (component `main`, a suite that is not
//! `-security`, `-updates` or `-backports`) over http, https or file. Its `signed-by`
//! keyring, when it names a file, verifies the archive.

use std::fs;
use std::path::{Path, PathBuf};

/// A mirror debootstrap may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub uri: String,
    /// The keyring apt verifies the archive with (`signed-by`), when it is a file.
    pub keyring: Option<PathBuf>,
    /// Where it was found (`/etc/apt/sources.list.d/debian.sources`), for messages.
    pub from: String,
}

#[derive(Debug, Default)]
struct Entry {
    types: Vec<String>,
    uris: Vec<String>,
    suites: Vec<String>,
    components: Vec<String>,
    signed_by: Option<String>,
    enabled: bool,
}

/// The mirror of the host's apt under `etc` (normally `/etc/apt`), or `None` with the
/// reason.
pub fn host_mirror(etc: &Path) -> Result<Mirror, String> {
    let mut files = vec![etc.join("sources.list")];
    let mut more: Vec<PathBuf> = fs::read_dir(etc.join("sources.list.d"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "list" || x == "sources"))
        .collect();
    more.sort();
    files.extend(more);
    for f in &files {
        let Ok(text) = fs::read_to_string(f) else {
            continue;
        };
        let entries = if f.extension().is_some_and(|x| x == "sources") {
            deb822(&text)
        } else {
            one_line(&text)
        };
        if let Some(m) = entries.iter().find_map(pick) {
            return Ok(Mirror {
                from: f.display().to_string(),
                ..m
            });
        }
    }
    Err(format!(
        "no Debian mirror in {}/sources.list or sources.list.d (an enabled `deb` entry of Debian's main archive, component main, over http, https or file): add one, or give --mirror URL",
        etc.display()
    ))
}

fn pick(e: &Entry) -> Option<Mirror> {
    let main_suite = e.suites.iter().any(|s| {
        !s.ends_with("-security") && !s.ends_with("-updates") && !s.ends_with("-backports")
    });
    if !e.enabled
        || !e.types.iter().any(|t| t == "deb")
        || !main_suite
        || !e.components.iter().any(|c| c == "main")
    {
        return None;
    }
    let uri = e.uris.iter().find(|u| {
        (u.starts_with("http://") || u.starts_with("https://") || u.starts_with("file:/"))
            && !u.trim_end_matches('/').ends_with("-security")
    })?;
    let keyring = e
        .signed_by
        .as_deref()
        .map(str::trim)
        .filter(|s| s.starts_with('/') && !s.contains('\n'))
        .map(PathBuf::from);
    Some(Mirror {
        uri: uri.clone(),
        keyring,
        from: String::new(),
    })
}

/// `deb [opt=val ...] URI SUITE COMPONENT...` lines.
fn one_line(text: &str) -> Vec<Entry> {
    text.lines()
        .filter_map(|l| {
            let l = l.split('#').next()?.trim();
            let (ty, mut rest) = l.split_once(char::is_whitespace)?;
            let mut signed_by = None;
            if let Some(r) = rest.trim_start().strip_prefix('[') {
                let (opts, after) = r.split_once(']')?;
                for o in opts.split_whitespace() {
                    if let Some(v) = o.strip_prefix("signed-by=") {
                        signed_by = Some(v.to_string());
                    }
                }
                rest = after;
            }
            let mut w = rest.split_whitespace();
            let uri = w.next()?.to_string();
            let suite = w.next()?.to_string();
            Some(Entry {
                types: vec![ty.to_string()],
                uris: vec![uri],
                suites: vec![suite],
                components: w.map(str::to_string).collect(),
                signed_by,
                enabled: true,
            })
        })
        .collect()
}

/// deb822 stanzas (`Types:`, `URIs:`, `Suites:`, `Components:`, `Signed-By:`, `Enabled:`).
fn deb822(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut cur: Option<Entry> = None;
    let mut last_key = String::new();
    for line in text.lines().chain(std::iter::once("")) {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            out.extend(cur.take());
            continue;
        }
        let e = cur.get_or_insert_with(|| Entry {
            enabled: true,
            ..Entry::default()
        });
        if line.starts_with(char::is_whitespace) {
            // A continuation (an inline Signed-By key block): not a file.
            if last_key == "signed-by" {
                e.signed_by = Some("inline\n".into());
            }
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        last_key = k.trim().to_ascii_lowercase();
        let words = || v.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        match last_key.as_str() {
            "types" => e.types = words(),
            "uris" => e.uris = words(),
            "suites" => e.suites = words(),
            "components" => e.components = words(),
            "signed-by" => e.signed_by = Some(v.trim().to_string()),
            "enabled" => e.enabled = v.trim() != "no",
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etc(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("sources.list.d")).unwrap();
        for (n, t) in files {
            fs::write(d.path().join(n), t).unwrap();
        }
        d
    }

    #[test]
    fn debian_12_deb822() {
        let d = etc(&[(
            "sources.list.d/debian.sources",
            "Types: deb\n# http://snapshot.debian.org/archive/debian/20250520T000000Z\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\n",
        )]);
        let m = host_mirror(d.path()).unwrap();
        assert_eq!(m.uri, "http://deb.debian.org/debian");
        assert_eq!(
            m.keyring.as_deref(),
            Some(Path::new("/usr/share/keyrings/debian-archive-keyring.gpg"))
        );
        assert!(m.from.ends_with("debian.sources"));
    }

    #[test]
    fn one_line_format_skips_security_disabled_and_sources() {
        let d = etc(&[
            (
                "sources.list",
                "# comment\ndeb-src http://src.example/debian bookworm main\ndeb http://security.debian.org/debian-security bookworm-security main\ndeb [arch=amd64 signed-by=/k.gpg] https://mirror.example/debian/ bookworm main contrib # x\n",
            ),
            (
                "sources.list.d/a.sources",
                "Enabled: no\nTypes: deb\nURIs: http://off.example/debian\nSuites: bookworm\nComponents: main\n",
            ),
        ]);
        let m = host_mirror(d.path()).unwrap();
        assert_eq!(m.uri, "https://mirror.example/debian/");
        assert_eq!(m.keyring.as_deref(), Some(Path::new("/k.gpg")));
    }

    #[test]
    fn an_inline_key_is_no_keyring_and_no_mirror_says_what_to_do() {
        let d = etc(&[(
            "sources.list.d/x.sources",
            "Types: deb\nURIs: http://deb.example/debian\nSuites: bookworm\nComponents: main\nSigned-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n",
        )]);
        assert_eq!(host_mirror(d.path()).unwrap().keyring, None);
        let d = etc(&[(
            "sources.list",
            "deb cdrom:[Debian]/ bookworm main\ndeb http://x/ubuntu jammy universe\n",
        )]);
        let e = host_mirror(d.path()).unwrap_err();
        assert!(e.contains("--mirror"), "{e}");
    }
}
