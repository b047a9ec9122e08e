//! Parsing the kernel log: `/dev/kmsg` records (`<prio>,<seq>,<usec>,<flags>;<text>`, then
//! continuation lines beginning with a space), the seccomp audit record inside one
//! (`audit: type=1326 audit(<time>:<serial>): auid=… uid=… gid=… ses=… pid=… comm=… exe=…
//! sig=… arch=… syscall=… compat=… ip=… code=…`), and the printk rate limit's
//! `kauditd_printk_skb: N callbacks suppressed`. Pure: no I/O, every input is untrusted (a
//! node chooses its `comm` and `exe`).

/// One seccomp audit record (`AUDIT_SECCOMP`, type 1326).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The task's thread-group id in the initial pid namespace (the host's pid).
    pub pid: i32,
    pub uid: u32,
    /// The audit session id (`ses=`; `u32::MAX` when unset).
    pub ses: u32,
    pub comm: String,
    pub exe: String,
    /// The signal the action delivers (0 for errno).
    pub sig: i32,
    /// The audit architecture (`0xc000003e` x86_64, `0xc00000b7` aarch64, `0x40000003` i386).
    pub arch: u32,
    pub syscall: i64,
    /// The filter's return value: action in the high 16 bits, errno (or data) in the low.
    pub code: u32,
}

impl Record {
    /// The action, as `/proc/sys/kernel/seccomp/actions_logged` names it.
    pub fn action(&self) -> &'static str {
        match self.code & 0xffff_0000 {
            0x8000_0000 => "kill_process",
            0x0000_0000 => "kill_thread",
            0x0003_0000 => "trap",
            0x0005_0000 => "errno",
            0x7fc0_0000 => "user_notif",
            0x7ff0_0000 => "trace",
            0x7ffc_0000 => "log",
            _ => "unknown",
        }
    }
}

/// One line read from the kernel log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Seccomp(Record),
    /// The printk rate limit dropped this many kernel audit messages (any audit type).
    Suppressed(u64),
    Other,
}

/// The text of one `/dev/kmsg` record (without the `prio,seq,usec,flags;` prefix and without
/// continuation lines). `None` for something that is not a kmsg record.
pub fn kmsg_text(rec: &str) -> Option<&str> {
    let (prefix, rest) = rec.split_once(';')?;
    if prefix.split(',').count() < 3 {
        return None;
    }
    Some(rest.split('\n').next().unwrap_or(""))
}

/// Classifies one kernel log message (kmsg text or a `dmesg` line).
pub fn parse(text: &str) -> Line {
    if let Some(n) = suppressed(text) {
        return Line::Suppressed(n);
    }
    match seccomp(text) {
        Some(r) => Line::Seccomp(r),
        None => Line::Other,
    }
}

fn suppressed(text: &str) -> Option<u64> {
    let rest = text.split("kauditd_printk_skb: ").nth(1)?;
    let n = rest.strip_suffix(" callbacks suppressed")?;
    n.trim().parse().ok()
}

fn seccomp(text: &str) -> Option<Record> {
    let at = text.find("type=1326 audit(")?;
    // Only the kernel's own "audit: " prefix (or none, as auditd writes it) may come before.
    let head = text[..at].trim_end();
    if !(head.is_empty() || head.ends_with("audit:")) {
        return None;
    }
    let body = &text[at..];
    let fields = body.split_once("): ")?.1;
    let mut r = Record {
        pid: -1,
        uid: u32::MAX,
        ses: u32::MAX,
        comm: String::new(),
        exe: String::new(),
        sig: 0,
        arch: 0,
        syscall: -1,
        code: 0,
    };
    let mut seen_syscall = false;
    for (k, v) in Fields(fields) {
        match k {
            "pid" => r.pid = v.parse().ok()?,
            "uid" => r.uid = v.parse().ok()?,
            "ses" => r.ses = v.parse().ok()?,
            "comm" => r.comm = untrusted(v),
            "exe" => r.exe = untrusted(v),
            "sig" => r.sig = v.parse().ok()?,
            "arch" => r.arch = u32::from_str_radix(v, 16).ok()?,
            "syscall" => {
                r.syscall = v.parse().ok()?;
                seen_syscall = true;
            }
            "code" => r.code = u32::from_str_radix(v.trim_start_matches("0x"), 16).ok()?,
            _ => {}
        }
    }
    (r.pid > 0 && seen_syscall).then_some(r)
}

/// `key=value` pairs; a value is a bare word, or a `"quoted string"` (which may hold spaces).
struct Fields<'a>(&'a str);

impl<'a> Iterator for Fields<'a> {
    type Item = (&'a str, &'a str);
    fn next(&mut self) -> Option<Self::Item> {
        let s = self.0.trim_start();
        if s.is_empty() {
            return None;
        }
        let eq = s.find('=')?;
        let key = &s[..eq];
        let rest = &s[eq + 1..];
        let (value, tail) = match rest.strip_prefix('"') {
            Some(q) => match q.find('"') {
                Some(end) => (&rest[..end + 2], &q[end + 1..]),
                None => (rest, ""),
            },
            None => match rest.find(' ') {
                Some(sp) => (&rest[..sp], &rest[sp..]),
                None => (rest, ""),
            },
        };
        self.0 = tail;
        Some((key, value))
    }
}

/// The kernel's `audit_log_untrustedstring`: `"text"` when the text is plain, else the bytes
/// in upper-case hex (no quotes); `(null)` when absent. Control characters are replaced, and
/// the result is bounded (a node chooses these strings).
fn untrusted(v: &str) -> String {
    let raw = if let Some(q) = v.strip_prefix('"') {
        q.strip_suffix('"').unwrap_or(q).as_bytes().to_vec()
    } else if v.len().is_multiple_of(2) && !v.is_empty() && v.bytes().all(|b| b.is_ascii_hexdigit())
    {
        (0..v.len())
            .step_by(2)
            .filter_map(|i| u8::from_str_radix(&v[i..i + 2], 16).ok())
            .collect()
    } else {
        v.as_bytes().to_vec()
    };
    String::from_utf8_lossy(&raw)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(256)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records as this host's kernel (6.18) wrote them to /dev/kmsg.
    const ERRNO: &str = "5,23835,63059444338,-;audit: type=1326 audit(1796048314.612:3): auid=4294967295 uid=0 gid=0 ses=4294967295 pid=3296 comm=\"seccomp::tests:\" exe=\"/work/wt/c/target/x86_64-unknown-linux-gnu/debug/deps/bulkhead_jail-f2e6018168550be0\" sig=0 arch=c000003e syscall=272 compat=0 ip=0x7f0dfdf0d837 code=0x50000";
    const PYTHON: &str = "audit: type=1326 audit(1796047703.692:2): auid=4294967295 uid=0 gid=0 ses=4294967295 pid=9510 comm=\"python3\" exe=\"/root/.pyenv/versions/3.11.7/bin/python3.11\" sig=0 arch=c000003e syscall=110 compat=0 ip=0x7f7904b1f829 code=0x50000";
    /// A kill (QEMU's -sandbox), with a comm the kernel hex-encoded (it holds a space).
    const KILL: &str = "6,900,123,-;audit: type=1326 audit(1700000000.000:77): auid=1000 uid=1065536 gid=1065536 ses=12 subj=unconfined pid=4242 comm=71656D75207379732D78 exe=\"/usr/bin/qemu-system-x86_64\" sig=31 arch=c000003e syscall=59 compat=0 ip=0x7f00 code=0x80000000";

    #[test]
    fn errno_record_from_kmsg() {
        let Line::Seccomp(r) = parse(kmsg_text(ERRNO).unwrap()) else {
            panic!("not parsed")
        };
        assert_eq!(r.pid, 3296);
        assert_eq!(r.syscall, 272);
        assert_eq!(r.arch, 0xc000_003e);
        assert_eq!(r.comm, "seccomp::tests:");
        assert!(r.exe.ends_with("bulkhead_jail-f2e6018168550be0"));
        assert_eq!(r.action(), "errno");
        assert_eq!(r.code & 0xffff, 0);
        assert_eq!(r.ses, u32::MAX);
        assert_eq!(r.sig, 0);
    }

    #[test]
    fn dmesg_line_and_kill_with_hex_comm() {
        let Line::Seccomp(r) = parse(PYTHON) else {
            panic!()
        };
        assert_eq!((r.pid, r.syscall, r.comm.as_str()), (9510, 110, "python3"));
        let Line::Seccomp(k) = parse(kmsg_text(KILL).unwrap()) else {
            panic!()
        };
        assert_eq!(k.comm, "qemu sys-x");
        assert_eq!(k.action(), "kill_process");
        assert_eq!((k.sig, k.ses, k.uid), (31, 12, 1_065_536));
    }

    #[test]
    fn other_lines_and_forgeries_are_not_records() {
        for l in [
            "6,1,2,-;eth0: link up",
            "audit: type=1400 audit(1.2:3): apparmor=\"DENIED\" pid=5",
            "audit: type=1326 audit(1.2:3): pid=abc syscall=1",
            "audit: type=1326 audit(1.2:3): uid=0",
            // A message something else printed, quoting a record: not the kernel's.
            "myprog: see type=1326 audit(1.2:3): pid=5 syscall=1",
            "",
        ] {
            let text = kmsg_text(l).unwrap_or(l);
            assert_eq!(parse(text), Line::Other, "{l}");
        }
    }

    #[test]
    fn suppressed_messages_are_counted() {
        // As this host printed it after a burst of 40 denied calls (10 printed, 30 dropped).
        let l = "4,24001,66773215405,-;kauditd_printk_skb: 30 callbacks suppressed";
        assert_eq!(parse(kmsg_text(l).unwrap()), Line::Suppressed(30));
        // Another subsystem's suppression is not ours.
        let other = "4,24002,66518082765,-;EXT4-fs mount: 22 callbacks suppressed";
        assert_eq!(parse(kmsg_text(other).unwrap()), Line::Other);
    }

    #[test]
    fn continuation_lines_are_dropped_and_control_characters_replaced() {
        let l = "5,1,2,-;audit: type=1326 audit(1.2:3): pid=7 comm=410A42 syscall=165 code=0x50001\n SUBSYSTEM=x";
        let Line::Seccomp(r) = parse(kmsg_text(l).unwrap()) else {
            panic!()
        };
        assert_eq!(r.comm, "A?B");
        assert_eq!(r.code & 0xffff, 1);
    }
}
