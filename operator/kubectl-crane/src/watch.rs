//! `kubectl crane watch`: follows one AgentRun and its Approvals with two watches and shows
//! the run after every change, until it finishes.
//!
//! On a terminal the run is one frame redrawn in place (cursor up, clear below, no line
//! wrapping while it runs, the cursor hidden; all restored on exit, Ctrl-C and panic), fitted
//! to the terminal's size and refreshed every second so running durations move; colours
//! unless `NO_COLOR` is set. Anywhere else (a pipe, a file, CI, `TERM=dumb`) it prints one
//! plain line per change. Either way it exits 0 when the run Succeeded and 1 when it Failed
//! or was Cancelled.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use crane_api::Approval;
use futures::stream::BoxStream;
use futures::{StreamExt, future};
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

use crate::commands::get_run;
use crate::error::{Action, Error, chain};
use crate::render::{changes, frame};
use crate::text::{clean, fit};
use crate::tree::{Tree, build};
use crate::view::{Ending, RunView};

/// Exit code of a run that Failed or was Cancelled.
pub const EXIT_UNSUCCESSFUL: u8 = 1;
/// Exit code when watching is interrupted with Ctrl-C (128 + SIGINT, as shells report it).
const EXIT_INTERRUPTED: u8 = 130;

/// What is known of the run.
struct State {
    run: RunView,
    approvals: BTreeMap<String, Approval>,
    /// Approvals listed since the watch (re)started, swapped in when the list is complete.
    relisting: Option<BTreeMap<String, Approval>>,
    /// A problem worth showing (a watch that is retrying, approvals we may not read).
    note: Option<String>,
}

impl State {
    fn tree(&self) -> Tree {
        let approvals: Vec<Approval> = self.approvals.values().cloned().collect();
        build(&self.run, &approvals, Timestamp::now())
    }

    fn approval(&mut self, event: watcher::Event<Approval>, run: &str) {
        let mine = |a: &Approval| a.spec.run == run;
        match event {
            watcher::Event::Init => self.relisting = Some(BTreeMap::new()),
            watcher::Event::InitApply(a) if mine(&a) => {
                if let Some(list) = self.relisting.as_mut() {
                    list.insert(a.name_any(), a);
                }
            }
            watcher::Event::InitDone => {
                if let Some(list) = self.relisting.take() {
                    self.approvals = list;
                }
            }
            watcher::Event::Apply(a) if mine(&a) => {
                self.approvals.insert(a.name_any(), a);
            }
            watcher::Event::Delete(a) => {
                self.approvals.remove(&a.name_any());
            }
            _ => {}
        }
    }
}

/// The kube error behind a watcher error, if any.
fn api_forbidden(e: &watcher::Error) -> bool {
    let inner = match e {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => e,
        watcher::Error::WatchError(status) => return status.is_forbidden(),
        watcher::Error::NoResourceVersion => return false,
    };
    matches!(inner, kube::Error::Api(status) if status.is_forbidden())
}

/// Follows run `name` in `namespace` until it finishes; the exit code says how it ended.
pub async fn watch(client: &Client, namespace: &str, name: &str) -> Result<ExitCode, Error> {
    let runs: Api<RunView> = Api::namespaced(client.clone(), namespace);
    let approvals: Api<Approval> = Api::namespaced(client.clone(), namespace);
    let run = get_run(&runs, namespace, name).await?;
    let mut state = State {
        run,
        approvals: BTreeMap::new(),
        relisting: None,
        note: None,
    };
    // A complete first picture, approvals included; the watch below keeps it current.
    let mut approval_events: Option<BoxStream<'static, _>> = match approvals
        .list(&ListParams::default())
        .await
    {
        Ok(list) => {
            for a in list.items.into_iter().filter(|a| a.spec.run == name) {
                state.approvals.insert(a.name_any(), a);
            }
            Some(
                watcher(approvals, watcher::Config::default())
                    .default_backoff()
                    .boxed(),
            )
        }
        Err(kube::Error::Api(status)) if status.is_forbidden() => {
            state.note = Some(format!(
                "approvals not shown: you may not list approvals.crane.dev in namespace {namespace}"
            ));
            None
        }
        Err(e) => {
            return Err(Error::kube(
                Action::new("list", "approvals.crane.dev", Some(namespace)),
                e,
            ));
        }
    };
    let mut run_events = watcher(
        runs,
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    )
    .default_backoff()
    .boxed();

    let mut screen = Screen::new();
    screen.show(&state)?;
    if let Some(ending) = state.run.ending() {
        return Ok(exit_code(ending));
    }
    // Whether the run came back in the list the watch (re)started with: when it does not,
    // it was deleted while the watch was down.
    let mut relisted = false;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut resized = Resized::new();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            event = run_events.next() => match event {
                Some(Ok(watcher::Event::Apply(r) | watcher::Event::InitApply(r))) => {
                    state.run = r;
                    state.note = None;
                    relisted = true;
                }
                Some(Ok(watcher::Event::Init)) => {
                    relisted = false;
                    continue;
                }
                Some(Ok(watcher::Event::InitDone)) if relisted => continue,
                Some(Ok(watcher::Event::Delete(_) | watcher::Event::InitDone)) => {
                    return Err(Error::RunDeleted { run: name.to_owned() });
                }
                Some(Err(e)) if api_forbidden(&e) => {
                    return Err(Error::Watch {
                        action: Action::new("watch", "agentruns.crane.dev", Some(namespace)),
                        message: chain(&e),
                    });
                }
                Some(Err(e)) => state.note = Some(format!("watch interrupted, retrying: {}", chain(&e))),
                None => return Err(Error::Watch {
                    action: Action::new("watch", "agentruns.crane.dev", Some(namespace)),
                    message: "the watch ended".to_owned(),
                }),
            },
            event = next_or_never(&mut approval_events) => match event {
                Some(Ok(e)) => state.approval(e, name),
                Some(Err(e)) if api_forbidden(&e) => {
                    approval_events = None;
                    state.note = Some(format!("approvals not shown: {}", chain(&e)));
                }
                Some(Err(e)) => state.note = Some(format!("watch interrupted, retrying: {}", chain(&e))),
                None => approval_events = None,
            },
            _ = tick.tick(), if screen.tty => {}
            _ = resized.next(), if screen.tty => screen.measure(),
            _ = &mut interrupted => {
                drop(screen);
                return Ok(ExitCode::from(EXIT_INTERRUPTED));
            }
        }
        screen.show(&state)?;
        if let Some(ending) = state.run.ending() {
            return Ok(exit_code(ending));
        }
    }
}

fn exit_code(ending: Ending) -> ExitCode {
    match ending {
        Ending::Succeeded => ExitCode::SUCCESS,
        Ending::Unsuccessful => ExitCode::from(EXIT_UNSUCCESSFUL),
    }
}

/// The next item of an optional stream; never, when there is none.
async fn next_or_never<T>(stream: &mut Option<BoxStream<'static, T>>) -> Option<T> {
    match stream {
        Some(s) => s.next().await,
        None => future::pending().await,
    }
}

/// Where the run is shown: a terminal frame redrawn in place, or plain lines.
struct Screen {
    tty: bool,
    color: bool,
    /// Lines of the frame on screen now.
    drawn: usize,
    width: usize,
    height: usize,
    previous: Option<Tree>,
    note: Option<String>,
}

impl Screen {
    fn new() -> Self {
        let stdout = std::io::stdout();
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        let tty = stdout.is_terminal() && !dumb;
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let mut screen = Self {
            tty,
            color: tty && !no_color,
            drawn: 0,
            width: 80,
            height: 24,
            previous: None,
            note: None,
        };
        if tty {
            screen.measure();
            // Hide the cursor and stop line wrapping while the frame is redrawn.
            let _ = write!(stdout.lock(), "\x1b[?25l\x1b[?7l");
        }
        screen
    }

    fn measure(&mut self) {
        (self.width, self.height) = terminal_size();
    }

    fn show(&mut self, state: &State) -> Result<(), Error> {
        let tree = state.tree();
        let mut out = std::io::stdout().lock();
        if self.tty {
            let mut lines = frame(&tree, self.width, self.height.saturating_sub(1), self.color);
            if let Some(note) = &state.note {
                let text = fit(&clean(note), self.width.saturating_sub(1));
                lines.push(if self.color {
                    format!("\x1b[33m{text}\x1b[0m")
                } else {
                    text
                });
            }
            let mut buf = String::new();
            if self.drawn > 0 {
                buf.push_str(&format!("\x1b[{}A", self.drawn));
            }
            buf.push_str("\r\x1b[J");
            for l in &lines {
                buf.push_str(l);
                buf.push('\n');
            }
            self.drawn = lines.len();
            out.write_all(buf.as_bytes()).map_err(Error::Output)?;
        } else {
            for line in changes(self.previous.as_ref(), &tree) {
                writeln!(out, "{line}").map_err(Error::Output)?;
            }
            if state.note != self.note {
                if let Some(note) = &state.note {
                    eprintln!("warning: {}", clean(note));
                }
                self.note = state.note.clone();
            }
        }
        out.flush().map_err(Error::Output)?;
        self.previous = Some(tree);
        Ok(())
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        if self.tty {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "\x1b[?7h\x1b[?25h");
            let _ = out.flush();
        }
    }
}

/// The terminal's (columns, rows): `stty size` on the controlling terminal, else COLUMNS
/// and LINES, else 80×24. (Asking the kernel directly needs an ioctl, i.e. unsafe code or a
/// dependency; stty is on every Unix.)
fn terminal_size() -> (usize, usize) {
    let env = |key: &str| {
        std::env::var(key)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0)
    };
    let stty = std::fs::File::open("/dev/tty").ok().and_then(|tty| {
        let out = std::process::Command::new("stty")
            .arg("size")
            .stdin(tty)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        let mut parts = text.split_whitespace().map(|p| p.parse::<usize>().ok());
        let rows = parts.next()??;
        let cols = parts.next()??;
        (rows > 0 && cols > 0).then_some((cols, rows))
    });
    stty.unwrap_or_else(|| (env("COLUMNS").unwrap_or(80), env("LINES").unwrap_or(24)))
}

/// Terminal resizes (SIGWINCH), where there are such signals.
struct Resized {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Resized {
    fn new() -> Self {
        Self {
            #[cfg(unix)]
            signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
                .ok(),
        }
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(s) = self.signal.as_mut() {
            s.recv().await;
            return;
        }
        future::pending::<()>().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::fixtures;

    fn state() -> State {
        State {
            run: fixtures::run(),
            approvals: BTreeMap::new(),
            relisting: None,
            note: None,
        }
    }

    fn names(s: &State) -> Vec<&str> {
        s.approvals.keys().map(String::as_str).collect()
    }

    #[test]
    fn approvals_follow_the_watch_and_a_relist_replaces_them() {
        let [step3, plan, other] = <[Approval; 3]>::try_from(fixtures::approvals()).unwrap();
        let mut s = state();
        s.approval(watcher::Event::Apply(step3.clone()), "milk");
        s.approval(watcher::Event::Apply(other.clone()), "milk");
        assert_eq!(
            names(&s),
            ["milk-step-3"],
            "other runs' approvals are left out"
        );
        // A relist (after the watch was down) shows only what exists now, once complete.
        s.approval(watcher::Event::Init, "milk");
        s.approval(watcher::Event::InitApply(plan.clone()), "milk");
        assert_eq!(
            names(&s),
            ["milk-step-3"],
            "kept until the relist is complete"
        );
        s.approval(watcher::Event::InitDone, "milk");
        assert_eq!(names(&s), ["milk-plan"]);
        s.approval(watcher::Event::Delete(plan), "milk");
        assert!(names(&s).is_empty());
    }
}
