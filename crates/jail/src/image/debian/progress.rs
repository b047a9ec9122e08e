//! debootstrap's own progress, parsed. Run with `--debian-installer`, debootstrap writes
//! machine-readable lines on fd 3 (the protocol debian-installer reads): `P: NOW END [STAGE]`
//! with `PA:` arguments and a `PF:` printf format naming the stage, `I:`/`IA:`/`IF:`
//! information, `W:` warnings and `E:` errors in the same shape. [`Tracker`] turns them into
//! one overall percentage (each stage weighted by how long it takes here: downloads, then
//! unpacking and configuring packages) and the current stage and detail.

/// One update for the display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Overall, 0..=100.
    pub percent: u8,
    /// The stage, as debootstrap names it ("Downloading packages").
    pub stage: String,
    /// What within the stage ("Extracting libc6...").
    pub detail: Option<String>,
    /// The first update of a stage (a plain log prints these only).
    pub new_stage: bool,
}

/// debootstrap's stages in order, with the overall percentage each one ends at.
const STAGES: &[(&str, u8)] = &[
    ("DOWNREL", 1),
    ("DOWNRELSIG", 2),
    ("DOWNPKGS", 12),
    ("SIZEDEBS", 13),
    ("DOWNDEBS", 35),
    ("EXTRACTPKGS", 42),
    ("INSTCORE", 48),
    ("UNPACKREQ", 58),
    ("CONFREQ", 70),
    ("INSTBASE", 72),
    ("UNPACKBASE", 84),
    ("CONFBASE", 99),
];

/// Parses fd 3's lines and keeps the state of the display.
#[derive(Debug, Default)]
pub struct Tracker {
    /// The message being read: its kind (`P`, `I`, `W`, `E`), name, arguments.
    kind: char,
    name: String,
    args: Vec<String>,
    /// The stage: its index in [`STAGES`] (or the last known), text, fraction.
    stage: Option<usize>,
    stage_text: String,
    frac: (u64, u64),
    detail: Option<String>,
    announced: bool,
    last_percent: u8,
    /// Warnings and the error debootstrap reported.
    pub warnings: Vec<String>,
    pub error: Option<String>,
}

/// printf's `%s` (and `%%`) with `args`, the only conversions debootstrap's messages use.
fn format(fmt: &str, args: &[String]) -> String {
    let mut out = String::new();
    let mut args = args.iter();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some(_) => out.push_str(args.next().map(String::as_str).unwrap_or("")),
            None => out.push('%'),
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Tracker {
    /// Feeds one line; returns an update when the display changes.
    pub fn line(&mut self, line: &str) -> Option<Progress> {
        let (tag, rest) = line
            .split_once(": ")
            .unwrap_or((line.trim_end_matches(':'), ""));
        match tag {
            "P" => {
                let mut w = rest.split_whitespace();
                let now = w.next()?.parse().ok()?;
                let end = w.next()?.parse().ok()?;
                self.frac = (now, end);
                match w.next() {
                    Some(name) => {
                        self.begin('P', name);
                        if let Some(i) = STAGES.iter().position(|(n, _)| *n == name) {
                            if self.stage != Some(i) {
                                self.stage = Some(i);
                                self.announced = false;
                                self.detail = None;
                            }
                        }
                        None
                    }
                    None => self.update(),
                }
            }
            "I" | "W" | "E" => {
                self.begin(tag.chars().next().unwrap_or('I'), rest);
                None
            }
            "PA" | "IA" | "WA" | "EA" => {
                self.args.push(rest.to_string());
                None
            }
            "PF" | "IF" | "WF" | "EF" => {
                let text = format(rest, &self.args);
                match self.kind {
                    'P' => {
                        if self.stage_text != text {
                            self.stage_text = text;
                        }
                        self.update()
                    }
                    'I' => {
                        self.detail = Some(text);
                        self.update()
                    }
                    'W' => {
                        self.warnings.push(text);
                        None
                    }
                    'E' => {
                        self.error = Some(text);
                        None
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    fn begin(&mut self, kind: char, name: &str) {
        self.kind = kind;
        self.name = name.to_string();
        self.args.clear();
    }

    /// The overall percentage: where the stage starts plus its fraction of its share.
    fn percent(&self) -> u8 {
        let Some(i) = self.stage else { return 0 };
        let start = if i == 0 { 0 } else { STAGES[i - 1].1 };
        let end = STAGES[i].1;
        let (now, total) = self.frac;
        let f = if total == 0 {
            0.0
        } else {
            (now.min(total) as f64) / (total as f64)
        };
        // Never backwards: a stage's fraction restarts when it is announced again.
        let p = start + ((end - start) as f64 * f) as u8;
        p.max(self.last_percent).min(100)
    }

    fn update(&mut self) -> Option<Progress> {
        if self.stage_text.is_empty() {
            return None;
        }
        let percent = self.percent();
        self.last_percent = percent;
        let new_stage = !self.announced;
        self.announced = true;
        Some(Progress {
            percent,
            stage: self.stage_text.clone(),
            detail: self.detail.clone(),
            new_stage,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as debootstrap 1.0.128 wrote them on fd 3 while building the `debian` image.
    const SAMPLE: &str = "P: 0 100 DOWNREL\nPF: Downloading Release file\nI: RETRIEVING\nIA: InRelease\nIA: \nIF: Retrieving %s %s\nP: 33 100\nP: 100 100 DOWNREL\nPF: Downloading Release file\nP: 0 100 DOWNRELSIG\nPF: Downloading Release file signature\nI: VALIDRELSIG\nIA: 4D64FEC119C2029067D6E791F8D2585B8783D481\nIF: Valid Release signature (key id %s)\nP: 0 50060337 DOWNPKGS\nPF: Downloading Packages files\nP: 25030168 50060337\nP: 0 42878840 DOWNDEBS\nPF: Downloading packages\nP: 42878840 42878840\nP: 1 88 EXTRACTPKGS\nPF: Extracting packages\nI: EXTRACTING\nIA: bash\nIF: Extracting %s...\nW: SOMETHING\nWA: x\nWF: careful with %s\nE: COULDNT_DL\nEA: libc6\nEF: Couldn't download package %s\n";

    #[test]
    fn the_sample_reads_as_stages_with_a_rising_percentage() {
        let mut t = Tracker::default();
        let ups: Vec<Progress> = SAMPLE.lines().filter_map(|l| t.line(l)).collect();
        let stages: Vec<&str> = ups
            .iter()
            .filter(|p| p.new_stage)
            .map(|p| p.stage.as_str())
            .collect();
        assert_eq!(
            stages,
            [
                "Downloading Release file",
                "Downloading Release file signature",
                "Downloading Packages files",
                "Downloading packages",
                "Extracting packages"
            ]
        );
        assert!(ups.windows(2).all(|w| w[0].percent <= w[1].percent));
        let half = ups
            .iter()
            .find(|p| p.stage == "Downloading Packages files" && !p.new_stage)
            .unwrap();
        assert_eq!(half.percent, 6);
        let last = ups.last().unwrap();
        assert_eq!(last.percent, 35);
        assert_eq!(last.detail.as_deref(), Some("Extracting bash..."));
        assert_eq!(t.warnings, ["careful with x"]);
        assert_eq!(t.error.as_deref(), Some("Couldn't download package libc6"));
    }

    #[test]
    fn formats_take_their_arguments_in_order() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            format("Retrieving %s %s", &a(&["Packages", ""])),
            "Retrieving Packages"
        );
        assert_eq!(format("100%% of %s", &a(&["x"])), "100% of x");
        assert_eq!(format("%s and %s", &a(&["one"])), "one and");
    }
}
