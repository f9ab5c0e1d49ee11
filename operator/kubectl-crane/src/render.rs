//! Laying out a [`Tree`]: [`frame`] draws the whole run for a terminal (cut to its width and
//! height, coloured unless asked not to), [`changes`] writes one plain line per thing that
//! changed since the previous tree, for logs and pipes. Both are pure.

use std::fmt::Write as _;

use crane_api::{Decision, Outcome};

use crate::text::{duration, fit, plural};
use crate::tree::{ApprovalRow, ApprovalState, Detail, StepRow, Tree};

/// How many Approvals the frame lists before it says how many more there are.
const MAX_APPROVAL_ROWS: usize = 6;
/// Deepest indentation of a step (a long chain would push everything off the screen).
const MAX_INDENT: usize = 6;

/// A colour or weight for a piece of a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Paint {
    Plain,
    Bold,
    Dim,
    Green,
    Red,
    Yellow,
    Cyan,
}

impl Paint {
    fn code(self) -> &'static str {
        match self {
            Paint::Plain => "",
            Paint::Bold => "\x1b[1m",
            Paint::Dim => "\x1b[2m",
            Paint::Green => "\x1b[32m",
            Paint::Red => "\x1b[31m",
            Paint::Yellow => "\x1b[33m",
            Paint::Cyan => "\x1b[36m",
        }
    }
}

/// One line of a frame: painted pieces.
#[derive(Clone, Debug, Default)]
struct Line(Vec<(Paint, String)>);

impl Line {
    fn new() -> Self {
        Self::default()
    }
    fn with(mut self, paint: Paint, text: impl Into<String>) -> Self {
        self.push(paint, text);
        self
    }
    fn push(&mut self, paint: Paint, text: impl Into<String>) {
        let text = text.into();
        if !text.is_empty() {
            self.0.push((paint, text));
        }
    }
    /// The line cut to `width` characters, with ANSI colours when `color`.
    fn draw(&self, width: usize, color: bool) -> String {
        let mut out = String::new();
        let mut left = width;
        for (paint, text) in &self.0 {
            if left == 0 {
                break;
            }
            let n = text.chars().count();
            let piece = if n > left {
                fit(text, left)
            } else {
                text.clone()
            };
            left = left.saturating_sub(n);
            if color && *paint != Paint::Plain {
                let _ = write!(out, "{}{piece}\x1b[0m", paint.code());
            } else {
                out.push_str(&piece);
            }
        }
        out
    }
}

/// How a phase is painted and marked.
fn phase_style(phase: &str) -> (Paint, &'static str) {
    match phase {
        "Succeeded" => (Paint::Green, "✓"),
        "Failed" => (Paint::Red, "✗"),
        "Cancelled" => (Paint::Red, "✗"),
        "Skipped" => (Paint::Dim, "-"),
        "Running" | "Planning" => (Paint::Cyan, "●"),
        "Ready" => (Paint::Dim, "○"),
        "Pending" => (Paint::Dim, "·"),
        "WaitingForApproval" | "AwaitingApproval" => (Paint::Yellow, "?"),
        _ => (Paint::Plain, " "),
    }
}

fn pad(s: &str, width: usize) -> String {
    let n = s.chars().count();
    format!("{s}{}", " ".repeat(width.saturating_sub(n)))
}

/// The run on a terminal of `width` × `height` characters: at most `height - 1` lines of at
/// most `width - 1` characters (so the cursor never wraps or scrolls the frame), with ANSI
/// colours when `color`. When the steps do not fit, those that need attention (failed,
/// running, waiting) are kept and the rest are counted on one line.
pub fn frame(tree: &Tree, width: usize, height: usize, color: bool) -> Vec<String> {
    let width = width.saturating_sub(1).max(20);
    let height = height.saturating_sub(1).max(5);

    let head = header(tree);
    let tail = approvals(tree)
        .into_iter()
        .chain(footer(tree))
        .collect::<Vec<_>>();
    let room = height.saturating_sub(head.len() + tail.len());
    let body = steps(&tree.steps, room);

    head.iter()
        .chain(&body)
        .chain(&tail)
        .take(height)
        .map(|l| l.draw(width, color).trim_end().to_owned())
        .collect()
}

fn header(tree: &Tree) -> Vec<Line> {
    let (paint, mark) = phase_style(&tree.phase);
    let mut first = Line::new()
        .with(Paint::Bold, format!("agentrun/{}", tree.name))
        .with(Paint::Plain, "  ")
        .with(paint, format!("{mark} {}", tree.phase));
    if let Some(p) = &tree.progress {
        first.push(Paint::Plain, format!("  {p} steps"));
    }
    if let Some(ms) = tree.elapsed_ms {
        first.push(Paint::Plain, format!("  {}", duration(ms)));
    }
    if tree.cancelling {
        first.push(Paint::Yellow, "  cancelling…");
    }
    let mut about = vec![format!("namespace {}", tree.namespace)];
    about.extend(tree.pool.as_ref().map(|p| format!("pool {p}")));
    about.extend(tree.planner.as_ref().map(|p| format!("planner {p}")));
    about.extend(tree.model.as_ref().map(|m| format!("model {m}")));
    let mut lines = vec![first, Line::new().with(Paint::Dim, about.join(" · "))];
    if let Some(u) = &tree.usage {
        lines.push(Line::new().with(
            Paint::Plain,
            format!(
                "usage {} ({} prompt + {} completion) · {} · {}",
                plural(u.total_tokens, "token", "tokens"),
                u.prompt_tokens,
                u.completion_tokens,
                plural(u.llm_calls, "llm call", "llm calls"),
                plural(u.tool_calls, "tool call", "tool calls"),
            ),
        ));
    }
    lines.push(Line::new());
    lines
}

/// Steps that need a person's eyes first when not all fit.
fn attention(phase: &str) -> u8 {
    match phase {
        "Succeeded" | "Skipped" => 2,
        "Pending" => 1,
        _ => 0,
    }
}

fn steps(rows: &[StepRow], room: usize) -> Vec<Line> {
    if rows.is_empty() {
        return vec![Line::new().with(Paint::Dim, "no plan yet"), Line::new()];
    }
    // One line for the column titles and one blank after the steps.
    let room = room.saturating_sub(2);
    let shown: Vec<&StepRow> = if rows.len() <= room {
        rows.iter().collect()
    } else {
        let keep = room.saturating_sub(1);
        let mut ranked: Vec<(u8, usize)> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| (attention(&r.phase), i))
            .collect();
        ranked.sort();
        let mut kept: Vec<usize> = ranked.into_iter().take(keep).map(|(_, i)| i).collect();
        kept.sort_unstable();
        kept.into_iter().map(|i| &rows[i]).collect()
    };

    // The STEP column: indentation by depth, the phase's mark, id, tool and (when the line
    // above is not the only dependency) the ids it waits for.
    let indents: Vec<String> = shown
        .iter()
        .map(|r| "  ".repeat(r.depth.min(MAX_INDENT)))
        .collect();
    let names: Vec<String> = shown
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut s = format!(" {} {}", r.id, r.tool);
            let follows_previous = i > 0 && r.depends_on == [shown[i - 1].id];
            if !r.depends_on.is_empty() && !follows_previous {
                let ids: Vec<String> = r.depends_on.iter().map(u32::to_string).collect();
                let _ = write!(s, " ← {}", ids.join(","));
            }
            fit(&s, 46 - indents[i].len())
        })
        .collect();
    let left: Vec<String> = indents
        .iter()
        .zip(&names)
        .map(|(indent, name)| format!("{indent}x{name}"))
        .collect();
    let attempts: Vec<String> = shown
        .iter()
        .map(|r| match r.attempts {
            0 => String::new(),
            n => plural(n.into(), "attempt", "attempts"),
        })
        .collect();
    let times: Vec<String> = shown
        .iter()
        .map(|r| r.duration_ms.map(duration).unwrap_or_default())
        .collect();
    let widest = |v: &[String], title: &str| {
        v.iter()
            .map(|s| s.chars().count())
            .chain([title.chars().count()])
            .max()
            .unwrap_or(0)
    };
    let w_left = widest(&left, "STEP");
    let w_phase = shown
        .iter()
        .map(|r| r.phase.chars().count())
        .chain([5])
        .max()
        .unwrap_or(5);
    let w_attempts = widest(&attempts, "ATTEMPTS");
    let w_time = widest(&times, "TIME");

    let mut lines = vec![Line::new().with(
        Paint::Dim,
        format!(
            "{}  {}  {}  {}  DETAIL",
            pad("STEP", w_left),
            pad("PHASE", w_phase),
            pad("ATTEMPTS", w_attempts),
            pad("TIME", w_time),
        ),
    )];
    for (i, r) in shown.iter().enumerate() {
        let (paint, mark) = phase_style(&r.phase);
        let mut line = Line::new()
            .with(Paint::Plain, indents[i].clone())
            .with(paint, mark)
            .with(Paint::Plain, pad(&names[i], w_left - indents[i].len() - 1))
            .with(Paint::Plain, "  ")
            .with(paint, pad(&r.phase, w_phase))
            .with(
                Paint::Plain,
                format!(
                    "  {}  {}  ",
                    pad(&attempts[i], w_attempts),
                    pad(&times[i], w_time)
                ),
            );
        if let Some(u) = &r.usage {
            line.push(
                Paint::Dim,
                format!("{}+{} tokens  ", u.prompt_tokens, u.completion_tokens),
            );
        }
        match &r.detail {
            Some(Detail::Output(o)) => line.push(Paint::Plain, format!("→ {o}")),
            Some(Detail::Error(e)) => line.push(Paint::Red, e.clone()),
            Some(Detail::Waiting(m)) => line.push(Paint::Yellow, m.clone()),
            None => {}
        }
        lines.push(line);
    }
    if shown.len() < rows.len() {
        let mut hidden: Vec<(&str, usize)> = Vec::new();
        for r in rows {
            if !shown.iter().any(|s| std::ptr::eq(*s, r)) {
                match hidden.iter_mut().find(|(p, _)| *p == r.phase) {
                    Some((_, n)) => *n += 1,
                    None => hidden.push((&r.phase, 1)),
                }
            }
        }
        let counts: Vec<String> = hidden.iter().map(|(p, n)| format!("{n} {p}")).collect();
        lines.push(Line::new().with(
            Paint::Dim,
            format!(
                "… {} more {}: {}",
                rows.len() - shown.len(),
                if rows.len() - shown.len() == 1 {
                    "step"
                } else {
                    "steps"
                },
                counts.join(", ")
            ),
        ));
    }
    lines.push(Line::new());
    lines
}

fn step_label(step: Option<u32>) -> String {
    step.map_or_else(|| "plan".to_owned(), |s| format!("step {s}"))
}

fn decided_text(decision: &str, by: Option<&str>, comment: Option<&str>) -> String {
    let mut s = decision.to_owned();
    if let Some(by) = by.filter(|b| !b.is_empty()) {
        let _ = write!(s, " by {by}");
    }
    if let Some(c) = comment.filter(|c| !c.is_empty()) {
        let _ = write!(s, ": {c}");
    }
    s
}

fn decision_name(d: Decision) -> &'static str {
    match d {
        Decision::Approved => "Approved",
        Decision::Rejected => "Rejected",
    }
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Approved => "Approved",
        Outcome::Rejected => "Rejected",
        Outcome::TimedOut => "TimedOut",
    }
}

fn approval_state_text(a: &ApprovalRow) -> (Paint, String) {
    match &a.state {
        ApprovalState::Open => {
            let mut s = format!("waiting: {}", a.message);
            if !a.approvers.is_empty() {
                let _ = write!(s, "  (approvers: {})", a.approvers.join(", "));
            }
            (Paint::Yellow, s)
        }
        ApprovalState::Decided {
            decision,
            by,
            comment,
        } => (
            Paint::Plain,
            decided_text(
                decision_name(*decision),
                Some(by.as_str()),
                comment.as_deref(),
            ) + " (applying)",
        ),
        ApprovalState::Done {
            outcome,
            by,
            comment,
        } => (
            match outcome {
                Outcome::Approved => Paint::Green,
                _ => Paint::Red,
            },
            decided_text(outcome_name(*outcome), by.as_deref(), comment.as_deref()),
        ),
    }
}

fn approvals(tree: &Tree) -> Vec<Line> {
    if tree.approvals.is_empty() {
        return Vec::new();
    }
    let open: Vec<&ApprovalRow> = tree.approvals.iter().filter(|a| a.is_open()).collect();
    let mut lines = vec![Line::new().with(Paint::Bold, format!("APPROVALS ({} open)", open.len()))];
    // Open ones first: they are why a person is looking.
    let mut rows: Vec<&ApprovalRow> = open.clone();
    rows.extend(tree.approvals.iter().filter(|a| !a.is_open()));
    let w_name = rows
        .iter()
        .map(|a| a.name.chars().count())
        .max()
        .unwrap_or(0);
    for a in rows.iter().take(MAX_APPROVAL_ROWS) {
        let mark = if a.is_open() { "?" } else { "·" };
        let (paint, text) = approval_state_text(a);
        lines.push(
            Line::new()
                .with(Paint::Plain, format!("{mark} {}  ", pad(&a.name, w_name)))
                .with(Paint::Plain, format!("{}  ", pad(&step_label(a.step), 8)))
                .with(paint, text),
        );
    }
    if rows.len() > MAX_APPROVAL_ROWS {
        lines.push(Line::new().with(
            Paint::Dim,
            format!("… {} more", rows.len() - MAX_APPROVAL_ROWS),
        ));
    }
    if let [only] = open.as_slice() {
        let step = only
            .step
            .map(|s| format!(" --step {s}"))
            .unwrap_or_default();
        lines.push(Line::new().with(
            Paint::Dim,
            format!(
                "decide: kubectl crane approve {}{step} [--comment TEXT]   or   kubectl crane reject …",
                tree.name
            ),
        ));
    } else if open.len() > 1 {
        lines.push(Line::new().with(
            Paint::Dim,
            format!(
                "decide: kubectl crane approve|reject {} --step N [--comment TEXT]",
                tree.name
            ),
        ));
    }
    lines.push(Line::new());
    lines
}

fn footer(tree: &Tree) -> Vec<Line> {
    let mut lines = Vec::new();
    if let Some(r) = &tree.result {
        lines.push(Line::new().with(Paint::Green, format!("result: {r}")));
    }
    if let Some(e) = &tree.error {
        lines.push(Line::new().with(Paint::Red, format!("error: {e}")));
    }
    lines
}

/// The plain lines that tell what changed from `prev` to `next` (everything worth saying
/// about `next` when there is no `prev`): one for the run when its phase, progress, usage or
/// cancellation changed, one per step whose phase, attempts, usage or detail changed, one
/// per Approval that appeared or changed state, and the result or error once the run ends.
pub fn changes(prev: Option<&Tree>, next: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    let run_key = |t: &Tree| {
        (
            t.phase.clone(),
            t.progress.clone(),
            t.usage,
            t.cancelling,
            t.result.clone(),
            t.error.clone(),
        )
    };
    if prev.is_none_or(|p| run_key(p) != run_key(next)) {
        out.push(run_line(next));
    }
    for step in &next.steps {
        let before = prev.and_then(|p| p.steps.iter().find(|s| s.id == step.id));
        let changed = match before {
            Some(b) => {
                (&b.phase, b.attempts, b.usage, &b.detail)
                    != (&step.phase, step.attempts, step.usage, &step.detail)
            }
            // A step nobody touched yet is not news; it shows once something happens.
            None => !(step.phase == "Pending" && step.attempts == 0 && step.detail.is_none()),
        };
        if changed {
            out.push(step_line(step));
        }
    }
    for a in &next.approvals {
        let before = prev.and_then(|p| p.approvals.iter().find(|b| b.name == a.name));
        if before.is_none_or(|b| b.state != a.state) {
            let (_, text) = approval_state_text(a);
            out.push(format!(
                "approval {} {}: {text}",
                a.name,
                step_label(a.step)
            ));
        }
    }
    out
}

fn run_line(t: &Tree) -> String {
    let mut s = format!("agentrun/{} {}", t.name, t.phase);
    if let Some(p) = &t.progress {
        let _ = write!(s, " steps={p}");
    }
    if let Some(u) = &t.usage {
        let _ = write!(
            s,
            " tokens={} llmCalls={} toolCalls={}",
            u.total_tokens, u.llm_calls, u.tool_calls
        );
    }
    if t.cancelling {
        s.push_str(" cancelling");
    }
    if let Some(r) = &t.result {
        let _ = write!(s, " result={r}");
    }
    if let Some(e) = &t.error {
        let _ = write!(s, " error={e}");
    }
    s
}

fn step_line(r: &StepRow) -> String {
    let mut s = format!("step {} {} {}", r.id, r.tool, r.phase);
    if r.attempts > 0 {
        let _ = write!(s, " attempts={}", r.attempts);
    }
    let finished = matches!(r.phase.as_str(), "Succeeded" | "Failed" | "Skipped");
    if let Some(ms) = r.duration_ms.filter(|_| finished) {
        let _ = write!(s, " time={}", duration(ms));
    }
    if let Some(u) = &r.usage {
        let _ = write!(s, " tokens={}+{}", u.prompt_tokens, u.completion_tokens);
    }
    match &r.detail {
        Some(Detail::Output(o)) => {
            let _ = write!(s, " output={o}");
        }
        Some(Detail::Error(e)) => {
            let _ = write!(s, " error={e}");
        }
        Some(Detail::Waiting(m)) => {
            let _ = write!(s, " waiting={m}");
        }
        None => {}
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::build;
    use crate::tree::fixtures::{approvals, now, run};

    fn plain_frame(width: usize, height: usize) -> Vec<String> {
        frame(&build(&run(), &approvals(), now()), width, height, false)
    }

    #[test]
    fn the_frame_shows_steps_usage_and_the_open_approval() {
        let lines = plain_frame(160, 50);
        let text = lines.join("\n");
        println!("{text}");
        assert_eq!(lines[0], "agentrun/milk  ● Running  2/5 steps  30s");
        assert_eq!(
            lines[1],
            "namespace team-a · pool default · planner llm · model small"
        );
        assert_eq!(
            lines[2],
            "usage 1234 tokens (1200 prompt + 34 completion) · 2 llm calls · 3 tool calls"
        );
        let step = |id: &str| {
            lines
                .iter()
                .find(|l| l.trim_start().split(' ').nth(1) == Some(id))
                .unwrap_or_else(|| panic!("no line for step {id} in\n{text}"))
                .clone()
        };
        let s1 = step("1");
        assert!(s1.starts_with("✓ 1 todo_store.add"), "{s1}");
        assert!(s1.contains("Succeeded"), "{s1}");
        assert!(s1.contains("1 attempt "), "{s1}");
        assert!(s1.contains("0.2s"), "{s1}");
        assert!(s1.contains(r#"→ {"completed":false,"id":1,"title":"Buy milk"}"#));
        let s2 = step("2");
        assert!(s2.starts_with("  ✓ 2 llm "), "indented under step 1: {s2}");
        assert!(s2.contains("2 attempts") && s2.contains("12s"), "{s2}");
        assert!(s2.contains("1000+30 tokens"), "{s2}");
        let s3 = step("3");
        assert!(s3.starts_with("    ? 3 approval"), "{s3}");
        assert!(s3.contains("WaitingForApproval"), "{s3}");
        assert!(s3.contains("waiting for approval milk-step-3"), "{s3}");
        let s5 = step("5");
        assert!(s5.starts_with("✗ 5 calculator"), "{s5}");
        assert!(
            s5.contains("Failed") && s5.contains("division by zero"),
            "{s5}"
        );
        assert!(text.contains("APPROVALS (1 open)"), "{text}");
        assert!(
            text.contains("? milk-step-3  step 3    waiting: Delete all todos? Really?  (approvers: alice, ops)"),
            "{text}"
        );
        assert!(
            text.contains("· milk-plan    plan      Approved by alice"),
            "{text}"
        );
        assert!(
            text.contains("decide: kubectl crane approve milk --step 3 [--comment TEXT]"),
            "{text}"
        );
        assert!(!text.contains("other-step-1"));
        assert!(!text.contains('\x1b'), "no colours when asked for none");
    }

    #[test]
    fn colours_only_when_asked() {
        let coloured = frame(&build(&run(), &approvals(), now()), 160, 50, true).join("\n");
        assert!(coloured.contains("\x1b[32mSucceeded"));
        assert!(coloured.contains("\x1b[31mdivision by zero"));
        assert!(coloured.contains("\x1b[33mWaitingForApproval"));
        // The only escapes are the ones we add: SGR sequences.
        let stripped = coloured
            .split('\x1b')
            .skip(1)
            .all(|piece| piece.starts_with('[') && piece.contains('m'));
        assert!(stripped);
    }

    #[test]
    fn every_line_fits_the_terminal() {
        for (w, h) in [(40, 10), (80, 24), (20, 3), (0, 0)] {
            let lines = plain_frame(w, h);
            let (w, h) = (w.saturating_sub(1).max(20), h.saturating_sub(1).max(5));
            assert!(lines.len() <= h, "{} lines for height {h}", lines.len());
            for l in &lines {
                assert!(l.chars().count() <= w, "{l:?} wider than {w}");
            }
        }
    }

    #[test]
    fn steps_that_need_attention_stay_when_not_all_fit() {
        let mut tree = build(&run(), &approvals(), now());
        tree.approvals.clear();
        let template = tree.steps[0].clone();
        tree.steps = (1..=300)
            .map(|id| StepRow {
                id,
                phase: if id == 150 { "Failed" } else { "Succeeded" }.into(),
                depends_on: Vec::new(),
                depth: 0,
                ..template.clone()
            })
            .collect();
        let lines = frame(&tree, 120, 20, false);
        assert_eq!(lines.len(), 19);
        let text = lines.join("\n");
        assert!(text.contains("✗ 150 todo_store.add"), "{text}");
        assert!(text.contains("… 288 more steps: 288 Succeeded"), "{text}");
    }

    #[test]
    fn plain_changes_say_what_happened_once() {
        let first = build(&run(), &approvals(), now());
        let lines = changes(None, &first);
        assert_eq!(
            lines,
            [
                "agentrun/milk Running steps=2/5 tokens=1234 llmCalls=2 toolCalls=3",
                r#"step 1 todo_store.add Succeeded attempts=1 time=0.2s output={"completed":false,"id":1,"title":"Buy milk"}"#,
                "step 2 llm Succeeded attempts=2 time=12s tokens=1000+30 output=One todo: buy milk.\u{fffd}[2J",
                "step 3 approval WaitingForApproval waiting=waiting for approval milk-step-3",
                "step 5 calculator Failed attempts=1 time=0.1s error=division by zero",
                "approval milk-plan plan: Approved by alice",
                "approval milk-step-3 step 3: waiting: Delete all todos? Really?  (approvers: alice, ops)",
            ]
        );
        // Time passing alone is no change.
        let later = build(
            &run(),
            &approvals(),
            "2026-01-01T10:05:00Z".parse().unwrap(),
        );
        assert_eq!(changes(Some(&first), &later), Vec::<String>::new());

        let mut next = later.clone();
        next.steps[2].phase = "Succeeded".into();
        next.steps[2].detail = Some(Detail::Output("approved".into()));
        next.approvals[1].state = ApprovalState::Decided {
            decision: Decision::Approved,
            by: "alice".into(),
            comment: Some("go".into()),
        };
        next.phase = "Succeeded".into();
        next.result = Some("done".into());
        assert_eq!(
            changes(Some(&later), &next),
            [
                "agentrun/milk Succeeded steps=2/5 tokens=1234 llmCalls=2 toolCalls=3 result=done",
                "step 3 approval Succeeded time=4m45s output=approved",
                "approval milk-step-3 step 3: Approved by alice: go (applying)",
            ]
        );
    }
}
