//! Architecture checks over the whole tree, cheap and without root (issue #9):
//!
//! - no `.rs` file under `crates/` is longer than [`MAX_LINES`] lines (split by concern; there is
//!   no allow-list);
//! - within each crate, no module imports from a module that imports it back: the files of a
//!   crate's `src/` tree form a graph by their `crate::`, `super::`, `self::` and child-module
//!   paths, and that graph has no cycle.
//!
//! The second check reads source text, not the compiler's resolution: comments and literals
//! are blanked out, inline modules (`mod tests { use super::*; }`) are followed, and a path is
//! resolved to the deepest file module it names; when the next segment is an item that module
//! only re-exports (`pub use`), the edge goes to where the item lives. Paths named in
//! `#[cfg(test)]` modules (inline or files) do not count: a test may drive its module through
//! the module's callers. Each binary under `src/bin/` is a crate of its own and is left out.

mod cycles;
mod lex;
mod modules;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use cycles::cycles;
use modules::{rs_files, Crate};

/// The longest a source file may be.
const MAX_LINES: usize = 600;

fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn no_source_file_is_over_the_line_limit() {
    let root = crates_dir();
    let mut files = Vec::new();
    rs_files(&root, &mut files);
    assert!(files.len() > 50, "found only {} files", files.len());
    let mut over: Vec<(usize, String)> = files
        .iter()
        .map(|f| {
            let n = std::fs::read_to_string(f).unwrap().lines().count();
            (n, f.strip_prefix(&root).unwrap().display().to_string())
        })
        .filter(|(n, _)| *n > MAX_LINES)
        .collect();
    over.sort_by(|a, b| b.cmp(a));
    assert!(
        over.is_empty(),
        "{} files under crates/ are over {MAX_LINES} lines; split each by concern:\n{}",
        over.len(),
        over.iter()
            .map(|(n, f)| format!("  {n:>5}  crates/{f}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn no_module_imports_from_a_module_importing_it_back() {
    let root = crates_dir();
    let mut found = Vec::new();
    let mut crates: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path().join("src"))
        .filter(|p| p.is_dir())
        .collect();
    crates.sort();
    assert!(crates.len() > 5, "found only {} crates", crates.len());
    for src in crates {
        let graph = Crate::read(&src).graph();
        for cycle in cycles(&graph) {
            found.push(
                cycle
                    .iter()
                    .chain(cycle.first())
                    .map(|f| {
                        src.join(f)
                            .strip_prefix(&root)
                            .map(|p| format!("crates/{}", p.display()))
                            .unwrap()
                    })
                    .collect::<Vec<_>>()
                    .join(" -> "),
            );
        }
    }
    assert!(
        found.is_empty(),
        "modules that import from a module importing them back (move what both need to a \
         module of its own, or pass it in):\n  {}",
        found.join("\n  ")
    );
}

#[test]
fn the_cycle_check_sees_imports() {
    // Two files importing each other (a, b), one through a `use` group; `super::super::` from
    // a nested file; and what must not count: comments, strings, a character literal, a test
    // module's `use super::*`, test modules (inline and a file) importing from c while c
    // imports from b, and a name the crate root only re-exports.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir(src.join("a")).unwrap();
    std::fs::create_dir(src.join("b")).unwrap();
    let write = |p: &str, s: &str| std::fs::write(src.join(p), s).unwrap();
    write(
        "lib.rs",
        "mod a;\nmod b;\nmod c;\npub use c::Thing;\npub fn root() {}\n",
    );
    write(
        "a.rs",
        "mod inner;\nuse crate::{b::{self, f as g}};\n// use crate::c::x;\nconst S: &str = \"crate::c::y\";\nfn t() { let _ = '{'; }\nconst R: &str = r#\"use crate::c::z; {\"#;\n",
    );
    write("a/inner.rs", "use super::super::c::Thing;\n");
    write(
        "b.rs",
        "pub fn f() { crate::a::t() }\n#[cfg(test)]\nmod tests {\n    use super::*;\n    use crate::c::Thing;\n}\n#[cfg(test)]\nmod more;\n",
    );
    write("b/more.rs", "use crate::c::Thing;\n");
    write(
        "c.rs",
        "pub struct Thing;\nfn u() { crate::Thing; crate::b::f(); }\n",
    );
    let graph = Crate::read(src).graph();
    let edges = |f: &str| graph.get(f).cloned().unwrap_or_default();
    assert_eq!(edges("a.rs"), BTreeSet::from(["b.rs".to_string()]));
    assert_eq!(edges("a/inner.rs"), BTreeSet::from(["c.rs".to_string()]));
    assert_eq!(edges("b.rs"), BTreeSet::from(["a.rs".to_string()]));
    assert_eq!(
        edges("c.rs"),
        BTreeSet::from(["b.rs".to_string()]),
        "a re-export resolves to its source"
    );
    assert_eq!(
        cycles(&graph),
        vec![vec!["a.rs".to_string(), "b.rs".to_string()]]
    );
}
