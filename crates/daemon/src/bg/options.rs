//! What a background exec may have beyond Slicer's (#15, C: E2B's processes): a stdin the
//! client writes to, a terminal, a tag to find it by, the environment and group it was asked
//! with, and whether the registry forgets it once it has ended (E2B has no delete: a process
//! is gone when it ends). Slicer's execs take the defaults: no stdin, no terminal, kept until
//! deleted.

/// A background exec's options; [`Default`] is Slicer's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// The client may write to its stdin (`write_stdin`, `close_stdin`).
    pub stdin: bool,
    /// It runs on a terminal (output comes as one stream; input is typed into it).
    pub tty: bool,
    /// A name the client may find it by instead of its pid.
    pub tag: Option<String>,
    /// The environment the client asked for (not the defaults laid under it), for listings.
    pub env: Vec<(String, String)>,
    pub gid: u32,
    /// Dropped from the registry once it has ended (at the next start on its tenant).
    pub forget_on_exit: bool,
    /// #16 B2: the container it runs in (`container=`), so deleting the container kills it.
    pub container: Option<String>,
}
