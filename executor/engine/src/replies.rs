//! What each engine script replies, as typed values: the one place that reads script replies
//! (their layouts are documented at the top of each `lua/*.lua`). Every script's reply type is
//! fixed where the script is declared ([`crate::scripts::Scripts`]); a reply of the wrong shape
//! means a script and this file disagree, and is an error saying what was wrong, never a guess.
//!
//! Run state a reply carries (a step's spec, outputs) is data, not shape: when it does not
//! parse, the reply still parses and says so ([`Started::work`]), so the worker can fail that
//! one step instead of abandoning the whole batch.

use std::collections::HashMap;
use std::str::FromStr;

use redis::Value;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value as Json;

use crane_core::plan::{Step, StepId};
use crane_core::run::{RunOptions, RunPhase};

use crate::queue::{BreakerPhase, BreakerState, QueueDepth};

/// A script reply type. `parse` says what was wrong with a reply of the wrong shape; the
/// caller adds which script and what it was doing.
pub trait Reply: Sized {
    fn parse(v: Value) -> Result<Self, String>;
}

/// A phase as the scripts write it: the same names serde uses for `RunPhase` and `StepPhase`.
pub fn phase<P: DeserializeOwned>(s: &str) -> Option<P> {
    P::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(s)).ok()
}

/// A phase's name as the scripts write it (the inverse of [`phase`]).
pub fn phase_name<P: Serialize>(p: &P) -> String {
    match serde_json::to_value(p) {
        Ok(Json::String(name)) => name,
        _ => String::new(),
    }
}

/// `init` and `restore`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreateReply {
    /// The run was created; these steps are ready, as pool hints `step|tool`.
    Created { ready: Vec<String> },
    /// A run with this id exists already; nothing changed.
    Exists,
}

/// What the end of one attempt did to its run: a `complete` that was accepted, or a reclaim
/// (`start`) that found the lost attempt was the last one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepEnded {
    /// The run's phase after the whole call.
    pub run_phase: RunPhase,
    /// When the step runs again (ms since the epoch), if it is retried.
    pub retry_due_ms: Option<u64>,
    /// The step's tool.
    pub tool: String,
    /// Steps that became ready, as pool hints `step|tool`.
    pub ready: Vec<String>,
}

impl StepEnded {
    /// Whether the run ended with this call.
    pub fn run_done(&self) -> bool {
        self.run_phase.is_terminal()
    }
}

/// One row of `start`: what became of one hint.
#[derive(Clone, Debug, PartialEq)]
pub enum StartReply {
    /// The step is Running under this attempt: the worker runs it.
    Started(Box<Started>),
    /// The step may not start now (`why`: "step is Running", "run finished", ...): the hint
    /// is dropped.
    Dropped { why: String },
    /// A reclaim found the lost attempt was the step's last: the step failed for good.
    Finished(StepEnded),
}

/// A step that started.
#[derive(Clone, Debug, PartialEq)]
pub struct Started {
    /// 1 for the first attempt.
    pub attempt: u32,
    /// What running it needs, or why the run state it came from does not parse.
    pub work: Result<StepWork, String>,
}

/// What running a started step needs, read from the run by the same script that started it.
#[derive(Clone, Debug, PartialEq)]
pub struct StepWork {
    pub step: Step,
    pub namespace: String,
    pub options: RunOptions,
    /// Outputs of the steps the input's variables read.
    pub outputs: HashMap<StepId, Json>,
}

/// One row of `complete`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompleteReply {
    /// This attempt held the step: its outcome is recorded.
    Accepted(StepEnded),
    /// Not the step's current attempt (late or duplicate): ignored. `held`: the step is
    /// Running under another attempt, whose worker holds the hint (do not acknowledge it).
    Stale { held: bool },
}

/// `release`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseReply {
    /// The step is Ready again, its attempt not counted.
    Released,
    /// The attempt no longer held the step; nothing changed.
    Stale,
}

/// `spend`: whether the run's budget covers a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpendReply {
    /// Covered and counted (or, for a settle, recorded).
    Ok,
    /// Refused: the budget's `limit` (`maxTokens`, `maxLlmCalls`, `maxToolCalls`) and why.
    Exceeded { limit: String, message: String },
}

/// `govern`: whether a Model's shared limits let a call go out now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GovernReply {
    Go,
    /// Not yet: try again in `wait_ms`; `limit` says which limit holds it back.
    Wait {
        wait_ms: u64,
        limit: String,
    },
}

/// `gate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateReply {
    /// The step waits for approval; its attempt was given back.
    Waiting,
    /// The attempt no longer held the step; nothing changed.
    Stale,
}

/// `decide`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecideReply {
    /// The step was not waiting; its phase (none: no such step).
    Stale { phase: Option<String> },
    /// Applied: the run's phase after it, and the steps to queue (`step|tool`).
    Decided { phase: RunPhase, ready: Vec<String> },
}

/// `cancel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelReply {
    /// No such run.
    Missing,
    /// The run's phase after the cancel (still Running while steps finish).
    Phase(RunPhase),
}

/// `sweep`: one run of a pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SweepReply {
    /// The run's keys are gone (deleted or expired).
    Gone,
    /// The run has finished.
    Done,
    /// The run goes on; these steps (pool hints `step|tool`) must be queued again.
    Active { requeue: Vec<String> },
}

impl SweepReply {
    /// Whether the pool can forget the run.
    pub fn run_done(&self) -> bool {
        !matches!(self, Self::Active { .. })
    }
}

/// `retry`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RetryReply {
    /// No such run.
    Missing,
    /// The run was neither Failed nor Cancelled; nothing changed.
    NotFailed(RunPhase),
    /// The run is Running again on `pool`; `reset` steps start over, `ready` of them at once
    /// (pool hints `step|tool`).
    Retried {
        pool: String,
        reset: usize,
        ready: Vec<String>,
    },
}

/// `pool_after`: a breaker after the call, one per section that named a tool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakerUpdate {
    pub tool: String,
    pub phase: BreakerPhase,
    /// While open: how long until it half-opens.
    pub remaining_open_ms: u64,
}

/// A reply's items in order, each read with an error that names it.
struct Items {
    items: std::vec::IntoIter<String>,
    at: usize,
}

impl Items {
    fn of(v: Value) -> Result<Self, String> {
        let items = match v {
            Value::Array(items) | Value::Set(items) => items
                .into_iter()
                .map(scalar)
                .collect::<Result<Vec<_>, _>>()?,
            other => vec![scalar(other)?],
        };
        Ok(Self {
            items: items.into_iter(),
            at: 0,
        })
    }

    fn next(&mut self, name: &str) -> Result<String, String> {
        self.at += 1;
        self.items
            .next()
            .ok_or_else(|| format!("item {} ({name}) is missing", self.at))
    }

    fn number<T: FromStr>(&mut self, name: &str) -> Result<T, String> {
        let s = self.next(name)?;
        s.parse()
            .map_err(|_| format!("item {} ({name}) is {s:?}, not a number", self.at))
    }

    fn run_phase(&mut self) -> Result<RunPhase, String> {
        let s = self.next("run phase")?;
        phase(&s).ok_or_else(|| format!("item {} ({s:?}) is not a run phase", self.at))
    }

    fn breaker_phase(&mut self) -> Result<BreakerPhase, String> {
        let s = self.next("breaker state")?;
        match s.as_str() {
            "closed" => Ok(BreakerPhase::Closed),
            "open" => Ok(BreakerPhase::Open),
            "half_open" => Ok(BreakerPhase::HalfOpen),
            _ => Err(format!("item {} ({s:?}) is not a breaker state", self.at)),
        }
    }

    fn is_empty(&self) -> bool {
        self.items.as_slice().is_empty()
    }

    fn rest(self) -> Vec<String> {
        self.items.collect()
    }
}

fn unexpected(status: &str) -> String {
    format!("unexpected status {status:?}")
}

fn scalar(v: Value) -> Result<String, String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).map_err(|_| "an item is not UTF-8".into()),
        Value::SimpleString(s) => Ok(s),
        Value::Int(i) => Ok(i.to_string()),
        Value::Okay => Ok("OK".into()),
        Value::Double(d) => Ok(d.to_string()),
        other => Err(format!("unexpected item {other:?}")),
    }
}

/// A batch script's reply: one row per item of the batch, in order.
fn rows<T>(v: Value, row: fn(Items) -> Result<T, String>) -> Result<Vec<T>, String> {
    let Value::Array(rows) = v else {
        return Err(format!("expected one row per item, got {v:?}"));
    };
    rows.into_iter()
        .enumerate()
        .map(|(i, r)| {
            Items::of(r)
                .and_then(row)
                .map_err(|e| format!("row {}: {e}", i + 1))
        })
        .collect()
}

fn step_ended(mut r: Items) -> Result<StepEnded, String> {
    let run_phase = r.run_phase()?;
    let due: u64 = r.number("retry due")?;
    let tool = r.next("tool")?;
    Ok(StepEnded {
        run_phase,
        retry_due_ms: (due > 0).then_some(due),
        tool,
        ready: r.rest(),
    })
}

impl Reply for CreateReply {
    fn parse(v: Value) -> Result<Self, String> {
        let mut r = Items::of(v)?;
        match r.next("status")?.as_str() {
            "created" => Ok(Self::Created { ready: r.rest() }),
            "exists" => Ok(Self::Exists),
            other => Err(unexpected(other)),
        }
    }
}

impl Reply for Vec<StartReply> {
    fn parse(v: Value) -> Result<Self, String> {
        rows(v, |mut r| match r.next("status")?.as_str() {
            "ok" => {
                let attempt = r.number("attempt")?;
                let spec = r.next("step spec")?;
                let namespace = r.next("namespace")?;
                let options = r.next("run options")?;
                let outputs = r.rest();
                if outputs.len() % 2 != 0 {
                    return Err("outputs are not id/output pairs".into());
                }
                Ok(StartReply::Started(Box::new(Started {
                    attempt,
                    work: step_work(&spec, namespace, &options, &outputs),
                })))
            }
            "drop" => Ok(StartReply::Dropped {
                why: r.next("reason")?,
            }),
            "finished" => step_ended(r).map(StartReply::Finished),
            other => Err(unexpected(other)),
        })
    }
}

/// The run state a started step carries; an error names the part that does not parse.
fn step_work(
    spec: &str,
    namespace: String,
    options: &str,
    outputs: &[String],
) -> Result<StepWork, String> {
    let step: Step = serde_json::from_str(spec).map_err(|e| format!("step spec: {e}"))?;
    let options: RunOptions =
        serde_json::from_str(options).map_err(|e| format!("run options: {e}"))?;
    let outputs = outputs
        .chunks_exact(2)
        .map(|kv| {
            let id: StepId = kv[0]
                .parse()
                .map_err(|_| format!("output id {:?}", kv[0]))?;
            let v =
                serde_json::from_str(&kv[1]).map_err(|e| format!("output of step {id}: {e}"))?;
            Ok((id, v))
        })
        .collect::<Result<_, String>>()?;
    Ok(StepWork {
        step,
        namespace,
        options,
        outputs,
    })
}

impl Reply for Vec<CompleteReply> {
    fn parse(v: Value) -> Result<Self, String> {
        rows(v, |mut r| match r.next("status")?.as_str() {
            "accepted" => step_ended(r).map(CompleteReply::Accepted),
            "stale" => Ok(CompleteReply::Stale {
                held: r.next("held")? == "1",
            }),
            other => Err(unexpected(other)),
        })
    }
}

impl Reply for ReleaseReply {
    fn parse(v: Value) -> Result<Self, String> {
        let mut r = Items::of(v)?;
        match r.next("status")?.as_str() {
            "released" => Ok(Self::Released),
            "stale" => Ok(Self::Stale),
            other => Err(unexpected(other)),
        }
    }
}

impl Reply for CancelReply {
    fn parse(v: Value) -> Result<Self, String> {
        let mut r = Items::of(v)?;
        let status = r.next("status")?;
        match (status.as_str(), phase(&status)) {
            ("missing", _) => Ok(Self::Missing),
            (_, Some(p)) => Ok(Self::Phase(p)),
            (other, None) => Err(unexpected(other)),
        }
    }
}

impl Reply for SweepReply {
    fn parse(v: Value) -> Result<Self, String> {
        let mut r = Items::of(v)?;
        match r.next("status")?.as_str() {
            "gone" => Ok(Self::Gone),
            "done" => Ok(Self::Done),
            "active" => Ok(Self::Active { requeue: r.rest() }),
            other => Err(unexpected(other)),
        }
    }
}

impl Reply for RetryReply {
    fn parse(v: Value) -> Result<Self, String> {
        let mut r = Items::of(v)?;
        match r.next("status")?.as_str() {
            "missing" => Ok(Self::Missing),
            "not-failed" => r.run_phase().map(Self::NotFailed),
            "retried" => Ok(Self::Retried {
                pool: r.next("pool")?,
                reset: r.number("reset steps")?,
                ready: r.rest(),
            }),
            other => Err(unexpected(other)),
        }
    }
}

impl Reply for Vec<BreakerUpdate> {
    fn parse(v: Value) -> Result<Self, String> {
        let mut r = Items::of(v)?;
        let mut out = Vec::new();
        while !r.is_empty() {
            out.push(BreakerUpdate {
                tool: r.next("tool")?,
                phase: r.breaker_phase()?,
                remaining_open_ms: r.number("remaining open ms")?,
            });
        }
        Ok(out)
    }
}

impl Reply for Vec<BreakerState> {
    fn parse(v: Value) -> Result<Self, String> {
        let mut r = Items::of(v)?;
        let mut out = Vec::new();
        while !r.is_empty() {
            out.push(BreakerState {
                tool: r.next("tool")?,
                phase: r.breaker_phase()?,
                failures: r.number("failures")?,
                successes: r.number("successes")?,
                // Negative while the script's clock passed the cooldown: half-open by now.
                remaining_open_ms: r.number::<i64>("remaining open ms")?.max(0).unsigned_abs(),
            });
        }
        Ok(out)
    }
}

impl Reply for QueueDepth {
    fn parse(v: Value) -> Result<Self, String> {
        let mut r = Items::of(v)?;
        let len: u64 = r.number("stream length")?;
        let pending: u64 = r.number("pending")?;
        let delayed = r.number("delayed")?;
        Ok(Self {
            queued: len.saturating_sub(pending),
            running: pending.min(len),
            delayed,
        })
    }
}

impl Reply for GateReply {
    fn parse(v: Value) -> Result<Self, String> {
        let mut r = Items::of(v)?;
        match r.next("status")?.as_str() {
            "waiting" => Ok(Self::Waiting),
            "stale" => Ok(Self::Stale),
            other => Err(unexpected(other)),
        }
    }
}

impl Reply for DecideReply {
    fn parse(v: Value) -> Result<Self, String> {
        let mut r = Items::of(v)?;
        match r.next("status")?.as_str() {
            "stale" => {
                let phase = r.next("phase")?;
                Ok(Self::Stale {
                    phase: (!phase.is_empty()).then_some(phase),
                })
            }
            "decided" => {
                let phase = r.run_phase()?;
                Ok(Self::Decided {
                    phase,
                    ready: r.rest(),
                })
            }
            other => Err(unexpected(other)),
        }
    }
}

impl Reply for SpendReply {
    fn parse(v: Value) -> Result<Self, String> {
        let mut r = Items::of(v)?;
        match r.next("status")?.as_str() {
            "ok" => Ok(Self::Ok),
            "exceeded" => Ok(Self::Exceeded {
                limit: r.next("limit")?,
                message: r.next("message")?,
            }),
            other => Err(unexpected(other)),
        }
    }
}

impl Reply for GovernReply {
    fn parse(v: Value) -> Result<Self, String> {
        let mut r = Items::of(v)?;
        match r.number::<u8>("go")? {
            1 => Ok(Self::Go),
            0 => Ok(Self::Wait {
                wait_ms: r.number("wait_ms")?,
                limit: r.next("limit")?,
            }),
            other => Err(unexpected(&other.to_string())),
        }
    }
}

impl Reply for u64 {
    fn parse(v: Value) -> Result<Self, String> {
        Items::of(v)?.number("count")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn array(items: &[&str]) -> Value {
        Value::Array(items.iter().map(|s| bulk(s)).collect())
    }

    fn started(row: &[&str]) -> Result<Started, String> {
        match <Vec<StartReply>>::parse(Value::Array(vec![array(row)]))?.pop() {
            Some(StartReply::Started(s)) => Ok(*s),
            other => Err(format!("not started: {other:?}")),
        }
    }

    #[test]
    fn started_reply_errors_name_the_bad_part() {
        let options = serde_json::to_string(&RunOptions::default()).unwrap_or_default();
        let ok = [
            "ok",
            "2",
            r#"{"id":3,"tool":"calculator","input":{"expression":"{step_1_output}"}}"#,
            "default",
            options.as_str(),
            "1",
            "42",
        ];
        let s = started(&ok).unwrap();
        let work = s.work.unwrap();
        assert_eq!(
            (s.attempt, work.step.id, work.outputs.get(&1)),
            (2, 3, Some(&serde_json::json!(42)))
        );
        // Corrupt run state: the reply parses, the step's work says what is wrong.
        let mut bad = ok;
        bad[2] = "{";
        let s = started(&bad).unwrap();
        assert_eq!(s.attempt, 2);
        assert!(s.work.err().unwrap_or_default().contains("step spec"));
        let mut bad = ok;
        bad[6] = "not json";
        assert!(
            started(&bad)
                .unwrap()
                .work
                .err()
                .unwrap_or_default()
                .contains("output of step 1")
        );
        // A reply of the wrong shape is an error that says which item.
        let err = started(&ok[..2]).unwrap_err();
        assert!(err.contains("step spec") && err.contains("row 1"), "{err}");
        let err = started(&["ok", "two"]).unwrap_err();
        assert!(err.contains("\"two\", not a number"), "{err}");
    }

    #[test]
    fn malformed_replies_are_errors_that_say_what_is_wrong() {
        let err = <Vec<CompleteReply>>::parse(Value::Array(vec![array(&[
            "accepted", "Exploded", "0", "calc",
        ])]))
        .unwrap_err();
        assert!(
            err.contains("Exploded") && err.contains("run phase"),
            "{err}"
        );
        assert!(<Vec<CompleteReply>>::parse(bulk("accepted")).is_err());
        assert!(CancelReply::parse(array(&["whatever"])).is_err());
        assert_eq!(
            CancelReply::parse(array(&["Running"])),
            Ok(CancelReply::Phase(RunPhase::Running))
        );
        let err = <Vec<BreakerUpdate>>::parse(array(&["wait", "ajar", "0"])).unwrap_err();
        assert!(err.contains("breaker state"), "{err}");
        assert!(<Vec<BreakerUpdate>>::parse(array(&["wait", "open"])).is_err());
        assert_eq!(
            <Vec<CompleteReply>>::parse(Value::Array(vec![
                array(&["stale", "1"]),
                array(&["accepted", "Succeeded", "0", "calc", "2|calc"]),
            ])),
            Ok(vec![
                CompleteReply::Stale { held: true },
                CompleteReply::Accepted(StepEnded {
                    run_phase: RunPhase::Succeeded,
                    retry_due_ms: None,
                    tool: "calc".into(),
                    ready: vec!["2|calc".into()],
                })
            ])
        );
    }
}
