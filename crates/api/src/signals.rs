//! Signal names on the wire: Slicer's clients send and read signals by name (`"SIGTERM"`,
//! `"TERM"`), bulkhead's agent by number. Linux numbering (the same on x86_64 and aarch64,
//! the architectures nodes run on); the table is the one list.

/// Linux's standard signals, by number.
const SIGNALS: [(i32, &str); 31] = [
    (1, "SIGHUP"),
    (2, "SIGINT"),
    (3, "SIGQUIT"),
    (4, "SIGILL"),
    (5, "SIGTRAP"),
    (6, "SIGABRT"),
    (7, "SIGBUS"),
    (8, "SIGFPE"),
    (9, "SIGKILL"),
    (10, "SIGUSR1"),
    (11, "SIGSEGV"),
    (12, "SIGUSR2"),
    (13, "SIGPIPE"),
    (14, "SIGALRM"),
    (15, "SIGTERM"),
    (16, "SIGSTKFLT"),
    (17, "SIGCHLD"),
    (18, "SIGCONT"),
    (19, "SIGSTOP"),
    (20, "SIGTSTP"),
    (21, "SIGTTIN"),
    (22, "SIGTTOU"),
    (23, "SIGURG"),
    (24, "SIGXCPU"),
    (25, "SIGXFSZ"),
    (26, "SIGVTALRM"),
    (27, "SIGPROF"),
    (28, "SIGWINCH"),
    (29, "SIGIO"),
    (30, "SIGPWR"),
    (31, "SIGSYS"),
];

/// The name of signal `n` (`"SIGKILL"`); real-time signals read `"SIGRTMIN+k"`, anything
/// else `"SIG<n>"`.
pub fn name(n: i32) -> String {
    match SIGNALS.iter().find(|(k, _)| *k == n) {
        Some((_, s)) => (*s).to_string(),
        None if (34..=64).contains(&n) => format!("SIGRTMIN+{}", n - 34),
        None => format!("SIG{n}"),
    }
}

/// A signal as a client names it: `SIGTERM`, `TERM`, `sigterm` or `15`. `None` for anything
/// that is no signal (0 included).
pub fn parse(s: &str) -> Option<i32> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let up = s.to_ascii_uppercase();
    let full = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    SIGNALS
        .iter()
        .find(|(_, name)| *name == full)
        .map(|(n, _)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_round_trip() {
        for (n, s) in SIGNALS {
            assert_eq!(name(n), s);
            assert_eq!(parse(s), Some(n));
            assert_eq!(parse(&s[3..].to_lowercase()), Some(n));
        }
        assert_eq!(parse("TERM"), Some(15));
        assert_eq!(parse("9"), Some(9));
        assert_eq!(name(35), "SIGRTMIN+1");
        for bad in ["", "0", "65", "-1", "SIGFOO", "KILLME"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
