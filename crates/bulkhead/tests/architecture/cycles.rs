//! Cycles in a graph of files: the strongly connected components (Tarjan), and in each the
//! shortest cycle through every member, so that a report names each pair or ring to untie.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

pub type Graph = BTreeMap<String, BTreeSet<String>>;

/// Every distinct shortest cycle through a file of a cycle, each starting at its smallest file
/// (the way back to it is implied), sorted.
pub fn cycles(g: &Graph) -> Vec<Vec<String>> {
    let mut out = BTreeSet::new();
    for scc in components(g) {
        for v in &scc {
            if let Some(mut c) = shortest_cycle(g, &scc, v) {
                let min = (0..c.len()).min_by_key(|&i| &c[i]).unwrap();
                c.rotate_left(min);
                out.insert(c);
            }
        }
    }
    out.into_iter().collect()
}

/// The strongly connected components with more than one file.
fn components(g: &Graph) -> Vec<BTreeSet<&str>> {
    struct T<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<BTreeSet<&'a str>>,
    }
    impl<'a> T<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on.insert(v);
            for w in self.g[v].iter().map(String::as_str) {
                if !self.g.contains_key(w) {
                    continue;
                }
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let l = self.low[v].min(self.low[w]);
                    self.low.insert(v, l);
                } else if self.on.contains(w) {
                    let l = self.low[v].min(self.index[w]);
                    self.low.insert(v, l);
                }
            }
            if self.low[v] == self.index[v] {
                let mut scc = BTreeSet::new();
                while let Some(w) = self.stack.pop() {
                    self.on.remove(w);
                    scc.insert(w);
                    if w == v {
                        break;
                    }
                }
                if scc.len() > 1 {
                    self.out.push(scc);
                }
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out
}

/// The shortest cycle from `start` back to it within one component (breadth-first).
fn shortest_cycle(g: &Graph, scc: &BTreeSet<&str>, start: &str) -> Option<Vec<String>> {
    let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for w in g[v].iter().map(String::as_str).filter(|w| scc.contains(w)) {
            if w == start {
                let mut path = vec![v.to_string()];
                let mut at = v;
                while at != start {
                    at = prev[at];
                    path.push(at.to_string());
                }
                path.reverse();
                return Some(path);
            }
            if !prev.contains_key(w) {
                prev.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    None
}
