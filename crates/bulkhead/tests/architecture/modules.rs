//! A crate's `src/` tree read as modules: each file's module path, the paths it names, the
//! items it defines and re-exports; and the graph of files those paths lead to.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::cycles::Graph;
use crate::lex::{blank, tokens};

/// Every `.rs` file under `dir`, skipping build output.
pub fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "target") {
                rs_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// One crate's `src/` tree: each file's module path and what the file says.
pub struct Crate {
    /// Module path (`["cmd", "vm"]`) to the file, relative to `src/`.
    modules: BTreeMap<Vec<String>, String>,
    files: BTreeMap<String, FileInfo>,
}

#[derive(Default)]
struct FileInfo {
    module: Vec<String>,
    /// Every path the file names, with the module path it was named in (inline modules make
    /// that deeper than the file's own).
    paths: Vec<(Vec<String>, Vec<String>)>,
    /// Items defined at the file's top level.
    items: BTreeSet<String>,
    /// `pub use` re-exports: name to the path it stands for, and the module they are named in.
    reexports: BTreeMap<String, (Vec<String>, Vec<String>)>,
    globs: Vec<(Vec<String>, Vec<String>)>,
    /// Child modules declared with `mod name;` or `mod name {`.
    children: BTreeSet<String>,
    /// Child modules declared `#[cfg(test)] mod name;`: their files are tests, not structure.
    test_children: BTreeSet<String>,
}

impl Crate {
    pub fn read(src: &Path) -> Crate {
        let mut files = Vec::new();
        rs_files(src, &mut files);
        let mut c = Crate {
            modules: BTreeMap::new(),
            files: BTreeMap::new(),
        };
        for f in files {
            let rel = f.strip_prefix(src).unwrap();
            if rel.starts_with("bin") {
                continue;
            }
            let mut module: Vec<String> = rel
                .with_extension("")
                .iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect();
            let last = module.last().map(String::as_str);
            if (module.len() > 1 && last == Some("mod"))
                || (module.len() == 1 && matches!(last, Some("lib" | "main")))
            {
                module.pop();
            }
            let name = rel.display().to_string();
            let info = parse(&std::fs::read_to_string(&f).unwrap(), module.clone());
            c.modules.insert(module, name.clone());
            c.files.insert(name, info);
        }
        c
    }

    /// File to the files it imports from.
    pub fn graph(&self) -> Graph {
        let mut g = BTreeMap::new();
        for (name, info) in &self.files {
            let mut to = BTreeSet::new();
            if self.is_test(&info.module) {
                g.insert(name.clone(), to);
                continue;
            }
            for (at, path) in &info.paths {
                if let Some(target) = self.resolve(info, at, path, 0) {
                    if &target != name {
                        to.insert(target);
                    }
                }
            }
            g.insert(name.clone(), to);
        }
        g
    }

    /// Whether the module is a file declared `#[cfg(test)] mod name;` by its parent.
    fn is_test(&self, module: &[String]) -> bool {
        let Some((last, parent)) = module.split_last() else {
            return false;
        };
        self.modules
            .get(parent)
            .is_some_and(|f| self.files[f].test_children.contains(last))
    }

    /// The file a path named in module `at` of file `from` leads to; `None` outside the crate.
    fn resolve(
        &self,
        from: &FileInfo,
        at: &[String],
        path: &[String],
        depth: usize,
    ) -> Option<String> {
        let full = absolute(from, at, path)?;
        let (len, file) = (0..=full.len())
            .rev()
            .find_map(|n| self.modules.get(&full[..n]).map(|f| (n, f)))?;
        let info = &self.files[file];
        let Some(item) = full.get(len) else {
            return Some(file.clone());
        };
        if depth < 4 && !info.items.contains(item) && !info.children.contains(item) {
            if let Some((at, p)) = info.reexports.get(item) {
                return self.resolve(info, at, p, depth + 1);
            }
            if let [(at, p)] = info.globs.as_slice() {
                return self.resolve(info, at, p, depth + 1);
            }
        }
        Some(file.clone())
    }
}

/// `path` named in module `at` of `file`, made absolute; `None` for another crate's path.
fn absolute(file: &FileInfo, at: &[String], path: &[String]) -> Option<Vec<String>> {
    let mut base = at.to_vec();
    let mut rest = path;
    match rest.first()?.as_str() {
        "crate" => {
            base.clear();
            rest = &rest[1..];
        }
        "self" => rest = &rest[1..],
        "super" => {
            while rest.first().is_some_and(|s| s == "super") {
                base.pop()?;
                rest = &rest[1..];
            }
            if rest.first().is_some_and(|s| s == "self") {
                rest = &rest[1..];
            }
        }
        first if file.children.contains(first) && at.len() == file.module.len() => {}
        _ => return None,
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// Reads what [`FileInfo`] holds from one file's text.
fn parse(text: &str, module: Vec<String>) -> FileInfo {
    let toks = tokens(&blank(text));
    let mut info = FileInfo {
        module: module.clone(),
        ..Default::default()
    };
    // Inline modules: name and the brace depth their body opened at.
    // Inline modules: name, the brace depth their body opened at, and whether it is
    // `#[cfg(test)]` (paths named in test modules are not recorded).
    let mut inline: Vec<(String, usize, bool)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    let at = |inline: &[(String, usize, bool)]| -> Vec<String> {
        let mut m = module.clone();
        m.extend(inline.iter().map(|(n, _, _)| n.clone()));
        m
    };
    while i < toks.len() {
        let t = toks[i].as_str();
        match t {
            "{" => depth += 1,
            "}" => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d, _)| *d == depth) {
                    inline.pop();
                }
            }
            "mod" if is_ident(toks.get(i + 1)) => {
                let name = toks[i + 1].clone();
                match toks.get(i + 2).map(String::as_str) {
                    Some("{") => {
                        if inline.is_empty() {
                            info.children.insert(name.clone());
                        }
                        let test = cfg_test(&toks, i) || inline.iter().any(|m| m.2);
                        inline.push((name, depth, test));
                        depth += 1;
                        i += 3;
                        continue;
                    }
                    Some(";") if inline.is_empty() => {
                        if cfg_test(&toks, i) {
                            info.test_children.insert(name.clone());
                        }
                        info.children.insert(name);
                    }
                    _ => {}
                }
            }
            "fn" | "struct" | "enum" | "trait" | "type" | "const" | "static" | "union"
                if inline.is_empty() && depth == 0 && is_ident(toks.get(i + 1)) =>
            {
                info.items.insert(toks[i + 1].clone());
            }
            "use" => {
                let public = i > 0 && (toks[i - 1] == "pub" || toks[i - 1] == ")");
                let end = (i..toks.len())
                    .find(|&j| toks[j] == ";")
                    .unwrap_or(toks.len());
                let mut trees = Vec::new();
                use_tree(&toks[i + 1..end], &[], &mut trees);
                let here = at(&inline);
                for (path, name) in trees {
                    if public && inline.is_empty() {
                        match name.as_deref() {
                            Some("*") => info.globs.push((here.clone(), path.clone())),
                            Some(n) => {
                                info.reexports
                                    .insert(n.to_string(), (here.clone(), path.clone()));
                            }
                            None => {}
                        }
                    }
                    if !inline.iter().any(|m| m.2) {
                        info.paths.push((here.clone(), path));
                    }
                }
                i = end + 1;
                continue;
            }
            _ if is_path_start(&toks, i, &info.children) => {
                let mut path = vec![t.to_string()];
                let mut j = i + 1;
                while toks.get(j).is_some_and(|s| s == "::") && is_ident(toks.get(j + 1)) {
                    path.push(toks[j + 1].clone());
                    j += 2;
                }
                if !inline.iter().any(|m| m.2) {
                    info.paths.push((at(&inline), path));
                }
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    info
}

/// Whether the `mod` at `toks[i]` (perhaps after `pub`) is preceded by `#[cfg(test)]`.
fn cfg_test(toks: &[String], i: usize) -> bool {
    let end = if i > 0 && toks[i - 1] == "pub" {
        i - 1
    } else {
        i
    };
    end >= 7 && toks[end - 7..end] == ["#", "[", "cfg", "(", "test", ")", "]"]
}

fn is_ident(t: Option<&String>) -> bool {
    t.is_some_and(|t| t.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_'))
}

/// A path that starts at `toks[i]` and may name a module of this crate.
fn is_path_start(toks: &[String], i: usize, children: &BTreeSet<String>) -> bool {
    let t = toks[i].as_str();
    (matches!(t, "crate" | "super" | "self") || children.contains(t))
        && toks.get(i + 1).is_some_and(|s| s == "::")
        && (i == 0 || toks[i - 1] != "::")
}

/// Expands one `use` tree (the tokens between `use` and `;`) into full paths, each with the
/// name it binds (`None` for `self` of a group, `*` for a glob).
fn use_tree(toks: &[String], prefix: &[String], out: &mut Vec<(Vec<String>, Option<String>)>) {
    let mut path = prefix.to_vec();
    let mut i = 0;
    while i < toks.len() {
        match toks[i].as_str() {
            "::" => {}
            "{" => {
                // Split the group at its top-level commas.
                let mut depth = 0;
                let mut start = i + 1;
                for j in i + 1..toks.len() {
                    match toks[j].as_str() {
                        "{" => depth += 1,
                        "}" if depth == 0 => {
                            use_tree(&toks[start..j], &path, out);
                            return;
                        }
                        "}" => depth -= 1,
                        "," if depth == 0 => {
                            use_tree(&toks[start..j], &path, out);
                            start = j + 1;
                        }
                        _ => {}
                    }
                }
                return;
            }
            "*" => {
                out.push((path, Some("*".into())));
                return;
            }
            "as" => {
                let alias = toks.get(i + 1).cloned();
                out.push((path, alias));
                return;
            }
            "self" if !path.is_empty() => {}
            s if is_ident(Some(&toks[i])) => path.push(s.to_string()),
            _ => {}
        }
        i += 1;
    }
    if path.len() > prefix.len() || !path.is_empty() {
        let name = path.last().cloned();
        out.push((path, name));
    }
}
