//! Pure builders of the WorkerPool controller: the autoscaling arithmetic, the worker Job
//! spec and the pool's status. No client, no clock, no randomness: callers pass the
//! observations, the time and the name suffix, so every rule here is unit-tested.

use std::collections::BTreeMap;

use crane_engine::queue::BreakerPhase;
use crane_engine::{BreakerState as EngineBreaker, PoolName, QueueDepth};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, Pod, SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::{Resource, ResourceExt};

use crate::context::Config;
use crate::controller::set_condition;
use crate::pod::{hardened_pod, redis_credentials_env};
use crane_api::{BreakerState, BreakerStatus, CONDITION_READY, WorkerPool, WorkerPoolStatus};

/// Label every worker Job and pod carries: `app.kubernetes.io/name=crane-worker`.
pub const LABEL_APP: &str = "app.kubernetes.io/name";
/// Value of [`LABEL_APP`] on workers.
pub const APP_WORKER: &str = "crane-worker";
/// Label naming the pool a worker serves (the WorkerPool's name).
pub const LABEL_POOL: &str = "crane.dev/pool";
/// Env vars the operator owns on worker pods; a pool's template may not set them, since
/// they would override how the worker reaches Redis.
pub const RESERVED_ENV: [&str; 4] = [
    "CRANE_REDIS_USERNAME",
    "CRANE_REDIS_PASSWORD",
    "CRANE_REDIS_PASSWORD_FILE",
    "REDIS_URL",
];
/// Annotation on worker Jobs: which set of tool Secrets their pods mount. A worker whose set
/// is not the namespace's current one is replaced (a new Tool's Secret reaches new pods only).
pub const ANNOTATION_SECRETS: &str = "crane.dev/tool-secrets";
/// Where worker pods find the Secrets tool headers reference (`<dir>/<secret>/<key>`).
pub const SECRETS_DIR: &str = "/var/run/crane/secrets";
/// Finished worker Jobs (and their pods) are removed this long after they end; long enough
/// to read a crashed worker's pod, short enough that idle cycles do not pile up.
pub const FINISHED_JOB_TTL_SECONDS: i32 = 300;
/// Job names must fit a label value (the Job controller labels pods with it): 63 bytes.
const MAX_JOB_NAME: usize = 63;
/// Longest breaker list kept in status; tools are a bounded set, this guards the object
/// size against a Redis hash filled by something else.
pub const MAX_BREAKERS_IN_STATUS: usize = 100;

/// Why a WorkerPool cannot be served as written; shown in its Ready condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The engine's pool key needs DNS labels (no dots), stricter than object names.
    #[error("the pool {pool:?} cannot be served: {why}")]
    PoolName { pool: String, why: String },
    /// The template sets an env var the operator owns.
    #[error(
        "spec.template.env[{index}].name {name:?} is reserved by the operator (it sets how workers reach Redis); remove it"
    )]
    ReservedEnv { index: usize, name: String },
    /// The object has no namespace (WorkerPool is namespaced; only a broken client sends this).
    #[error("the WorkerPool has no metadata.namespace")]
    NoNamespace,
}

/// What worker pods get from the operator's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerSettings {
    pub image: String,
    pub image_pull_policy: String,
    pub redis_url: String,
    /// Port of the workers' /metrics; 0: none.
    pub metrics_port: u16,
    /// `OTEL_*` variables for the workers (the operator's own).
    pub telemetry_env: Vec<(String, String)>,
}

impl WorkerSettings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            image: config.executor_image.clone(),
            image_pull_policy: config.image_pull_policy.clone(),
            redis_url: config.redis_url.clone(),
            metrics_port: config.worker_metrics_port,
            telemetry_env: config.telemetry.env.clone(),
        }
    }
}

/// Checks what the CRD schema cannot: the engine's pool name and the reserved env vars.
/// Returns the engine's name of the pool (`<namespace>/<name>`).
pub fn validate(pool: &WorkerPool) -> Result<PoolName, SpecError> {
    let ns = pool.namespace().ok_or(SpecError::NoNamespace)?;
    let full = format!("{ns}/{}", pool.name_any());
    let name = PoolName::parse(&full).map_err(|e| SpecError::PoolName {
        pool: full.chars().take(200).collect(),
        why: e.to_string(),
    })?;
    let env = pool
        .spec
        .template
        .as_ref()
        .and_then(|t| t.env.as_deref())
        .unwrap_or_default();
    if let Some((index, var)) = env
        .iter()
        .enumerate()
        .find(|(_, v)| RESERVED_ENV.contains(&v.name.as_str()))
    {
        return Err(SpecError::ReservedEnv {
            index,
            name: var.name.clone(),
        });
    }
    Ok(name)
}

/// Workers the pool should have: clamp(ceil((queued + running) / targetQueueDepth),
/// minWorkers, maxWorkers). Delayed steps (retry backoff, open breaker) are promoted by
/// workers, so while any exist at least one worker is kept (within maxWorkers).
/// Total for any input: a target of 0 counts as 1 and min > max yields max.
pub fn desired_workers(depth: &QueueDepth, min: u32, max: u32, target: u32) -> u32 {
    let load = depth.total();
    let by_load = load.div_ceil(u64::from(target.max(1)));
    let floor = if depth.delayed > 0 { min.max(1) } else { min };
    let wanted = by_load.max(u64::from(floor));
    // min > max is rejected at admission; here the upper bound wins so the pool never
    // grows past what its owner allowed.
    u32::try_from(wanted.min(u64::from(max))).unwrap_or(max)
}

/// Whether a worker Job still holds (or will hold) a running worker: created, not finished
/// and not being deleted. Starting Jobs count, so the controller never over-creates.
pub fn is_active(job: &Job) -> bool {
    if job.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let finished = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.status == "True"
                    && matches!(
                        c.type_.as_str(),
                        "Complete" | "Failed" | "SuccessCriteriaMet" | "FailureTarget"
                    )
            })
        });
    !finished
}

/// Whether `job` is a worker of `pool` (controller owner reference with the pool's uid).
pub fn is_worker_of(job: &Job, pool: &WorkerPool) -> bool {
    let Some(uid) = pool.meta().uid.as_deref() else {
        return false;
    };
    job.owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && o.uid == uid && o.kind == "WorkerPool")
}

/// `<pool>-worker-<suffix>`, the pool part shortened so the name stays a valid label value.
pub fn job_name(pool: &str, suffix: &str) -> String {
    let tail = format!("-worker-{suffix}");
    let room = MAX_JOB_NAME.saturating_sub(tail.len());
    let head: String = pool.chars().take(room).collect();
    // A cut may end on '-', which would leave "--" (still valid, but ugly and confusing).
    format!("{}{tail}", head.trim_end_matches('-'))
}

/// One read-only Secret volume per Secret the namespace's tools reference, mounted at
/// `SECRETS_DIR/<name>`. Optional: a Secret created later, or never, does not stop the pod;
/// a step that needs it says the key is not available.
fn secret_volumes(secrets: &[String]) -> (Vec<Volume>, Vec<VolumeMount>) {
    secrets
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let volume = format!("tool-secret-{i}");
            (
                Volume {
                    name: volume.clone(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(name.clone()),
                        optional: Some(true),
                        default_mode: Some(0o440),
                        ..SecretVolumeSource::default()
                    }),
                    ..Volume::default()
                },
                VolumeMount {
                    name: volume,
                    mount_path: format!("{SECRETS_DIR}/{name}"),
                    read_only: Some(true),
                    ..VolumeMount::default()
                },
            )
        })
        .unzip()
}

/// What a worker pod gets from its namespace besides its spec: the tool Secrets it mounts
/// and the generation of the Redis login it reads. A worker started with other ones is
/// replaced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mounts {
    pub secrets: Vec<String>,
    pub login: String,
}

impl Mounts {
    /// A short stable digest (FNV-1a, 64 bits), kept in the worker Job's annotation.
    pub fn hash(&self) -> String {
        secrets_hash(self.secrets.iter().chain([&self.login]))
    }
}

fn secrets_hash<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let h = names.fold(0xcbf2_9ce4_8422_2325_u64, |h, name| {
        name.bytes()
            .chain([0])
            .fold(h, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
    });
    format!("{h:016x}")
}

/// Whether a worker Job mounts the namespace's current [`Mounts`] (given by its hash).
pub fn mounts_current_secrets(job: &Job, hash: &str) -> bool {
    job.annotations()
        .get(ANNOTATION_SECRETS)
        .map(String::as_str)
        == Some(hash)
}

/// The labels of a pool's workers (Job and pod).
pub fn worker_labels(pool_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_APP.to_owned(), APP_WORKER.to_owned()),
        (LABEL_POOL.to_owned(), pool_name.to_owned()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "crane-operator".to_owned(),
        ),
        ("app.kubernetes.io/part-of".to_owned(), "crane".to_owned()),
    ])
}

/// Label selector matching the workers of the pool named `pool_name`.
pub fn worker_selector(pool_name: &str) -> String {
    format!("{LABEL_APP}={APP_WORKER},{LABEL_POOL}={pool_name}")
}

/// One worker Job of `pool` (validated with [`validate`]), named with `suffix`.
pub fn worker_job(
    pool: &WorkerPool,
    engine_pool: &PoolName,
    settings: &WorkerSettings,
    mounted: &Mounts,
    suffix: &str,
) -> Job {
    let name = pool.name_any();
    let labels = worker_labels(&name);
    let spec = &pool.spec;
    let template = spec.template.clone().unwrap_or_default();

    let mut env = redis_credentials_env();
    env.extend(settings.telemetry_env.iter().map(|(name, value)| EnvVar {
        name: name.clone(),
        value: Some(value.clone()),
        ..EnvVar::default()
    }));
    env.extend(template.env.unwrap_or_default());

    let mut command = vec![
        "crane-executor".to_owned(),
        "work".to_owned(),
        "--redis".to_owned(),
        settings.redis_url.clone(),
        "--pool".to_owned(),
        engine_pool.to_string(),
        "--concurrency".to_owned(),
        spec.concurrency.max(1).to_string(),
        "--idle-timeout".to_owned(),
        // 0 would mean "never exit", and scale-in relies on workers exiting.
        spec.idle_timeout_seconds.max(1).to_string(),
    ];
    if let Some(tools) = spec.tools.as_ref().filter(|t| !t.is_empty()) {
        command.extend(["--tools".to_owned(), tools.join(",")]);
    }
    let ports = (settings.metrics_port > 0).then(|| {
        command.extend([
            "--metrics-addr".to_owned(),
            format!("0.0.0.0:{}", settings.metrics_port),
        ]);
        vec![ContainerPort {
            name: Some("metrics".to_owned()),
            container_port: i32::from(settings.metrics_port),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]
    });
    let mut container = Container {
        name: "worker".to_owned(),
        image: Some(settings.image.clone()),
        image_pull_policy: Some(settings.image_pull_policy.clone()),
        command: Some(command),
        env: (!env.is_empty()).then_some(env),
        ports,
        resources: template.resources,
        ..Container::default()
    };
    let (volumes, mounts) = secret_volumes(&mounted.secrets);
    container.volume_mounts = (!mounts.is_empty()).then_some(mounts);
    let mut pod = hardened_pod(labels.clone(), container);
    if let Some(spec) = pod.spec.as_mut() {
        spec.node_selector = template.node_selector;
        spec.tolerations = template.tolerations;
        spec.volumes = (!volumes.is_empty()).then_some(volumes);
    }
    if let Some(meta) = pod.metadata.as_mut() {
        meta.annotations = Some(BTreeMap::from([(
            ANNOTATION_SECRETS.to_owned(),
            mounted.hash(),
        )]));
    }

    Job {
        metadata: ObjectMeta {
            name: Some(job_name(&name, suffix)),
            namespace: pool.namespace(),
            labels: Some(labels.clone()),
            annotations: Some(BTreeMap::from([(
                ANNOTATION_SECRETS.to_owned(),
                mounted.hash(),
            )])),
            owner_references: pool.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            // A worker that crashed is replaced by the autoscaler, not retried in place:
            // its steps come back through the lease, whoever takes them.
            backoff_limit: Some(0),
            completions: Some(1),
            parallelism: Some(1),
            ttl_seconds_after_finished: Some(FINISHED_JOB_TTL_SECONDS),
            template: pod,
            ..JobSpec::default()
        }),
        status: None,
    }
}

/// The engine's breakers as status entries, sorted by tool, at most
/// [`MAX_BREAKERS_IN_STATUS`].
pub fn breakers(states: &[EngineBreaker]) -> Vec<BreakerStatus> {
    let mut out: Vec<BreakerStatus> = states
        .iter()
        .map(|b| BreakerStatus {
            tool: b.tool.chars().take(128).collect(),
            state: match b.phase {
                BreakerPhase::Closed => BreakerState::Closed,
                BreakerPhase::Open => BreakerState::Open,
                BreakerPhase::HalfOpen => BreakerState::HalfOpen,
            },
            failures: b.failures,
        })
        .collect();
    out.sort_by(|a, b| a.tool.cmp(&b.tool));
    out.dedup_by(|a, b| a.tool == b.tool);
    out.truncate(MAX_BREAKERS_IN_STATUS);
    out
}

/// Container waiting reasons that mean a worker will not start without a change (a missing
/// Secret, an image that cannot be pulled, a process that keeps crashing).
const STUCK_REASONS: [&str; 7] = [
    "CreateContainerConfigError",
    "CreateContainerError",
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CrashLoopBackOff",
    "RunContainerError",
];

/// Whether any active worker Job has a ready pod (the Job controller counts them).
pub fn any_worker_ready(jobs: &[Job]) -> bool {
    jobs.iter()
        .any(|j| j.status.as_ref().and_then(|s| s.ready).unwrap_or(0) > 0)
}

/// The first worker pod stuck for a reason of [`STUCK_REASONS`], as
/// `pod <name>: <reason>: <message>`.
pub fn stuck_reason(pods: &[Pod]) -> Option<String> {
    pods.iter().find_map(|pod| {
        let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
        statuses.iter().find_map(|c| {
            let waiting = c.state.as_ref()?.waiting.as_ref()?;
            let reason = waiting.reason.as_deref()?;
            STUCK_REASONS.contains(&reason).then(|| {
                let message = waiting.message.as_deref().unwrap_or("");
                let message = crane_core::text::truncate(message, 300);
                format!("pod {}: {reason}: {message}", pod.name_any())
                    .trim_end_matches([':', ' '])
                    .to_owned()
            })
        })
    })
}

/// What one reconcile found out, from which the status is built.
#[derive(Clone, Debug, PartialEq)]
pub enum Observation {
    /// Redis answered; `created` worker Jobs were added this time.
    Scaled {
        depth: QueueDepth,
        breakers: Vec<BreakerStatus>,
        active: u32,
        desired: u32,
        created: u32,
        /// Why no active worker has started, when none has (a pod's waiting reason).
        not_starting: Option<String>,
    },
    /// Queue depth could not be read; the numbers in status stay as they were.
    RedisUnavailable { active: u32, message: String },
    /// The pool's spec cannot be served; nothing is created until it changes.
    Invalid { message: String },
    /// Creating worker Jobs failed.
    JobCreateFailed {
        depth: QueueDepth,
        active: u32,
        desired: u32,
        message: String,
    },
}

/// Reasons of the Ready condition.
pub mod reason {
    pub const WORKERS_ACTIVE: &str = "WorkersActive";
    pub const IDLE: &str = "Idle";
    pub const NO_WORKERS_ALLOWED: &str = "NoWorkersAllowed";
    pub const REDIS_UNAVAILABLE: &str = "RedisUnavailable";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const JOB_CREATE_FAILED: &str = "JobCreateFailed";
    pub const WORKERS_NOT_STARTING: &str = "WorkersNotStarting";
}

/// The new status of `pool` after `obs`, at `now`. Numbers the observation does not cover
/// keep their old values; `lastTransitionTime` moves only when the condition's status does.
/// `last_scale` is the controller's own memory of its last scale-up: the cached pool may
/// predate that status write, and applying a status without the field would erase it.
pub fn status(
    pool: &WorkerPool,
    obs: &Observation,
    now: &Time,
    last_scale: Option<&Time>,
) -> WorkerPoolStatus {
    let old = pool.status.clone().unwrap_or_default();
    let mut new = WorkerPoolStatus {
        observed_generation: pool.meta().generation,
        last_scale_time: latest(old.last_scale_time.as_ref(), last_scale).cloned(),
        ..old.clone()
    };
    let (ready, why, message) = match obs {
        Observation::Scaled {
            depth,
            breakers,
            active,
            desired,
            created,
            not_starting,
        } => {
            new.queue_depth = depth.queued;
            new.running = depth.running;
            new.active_workers = *active;
            new.desired_workers = *desired;
            new.breakers = breakers.clone();
            if *created > 0 {
                new.last_scale_time = Some(now.clone());
            }
            let load = depth.total() + depth.delayed;
            if let Some(why) = not_starting.as_ref().filter(|_| *active > 0) {
                (
                    false,
                    reason::WORKERS_NOT_STARTING,
                    format!("{active} worker(s) created but none could start: {why}"),
                )
            } else if *active > 0 {
                (
                    true,
                    reason::WORKERS_ACTIVE,
                    // Queue numbers stay out of the message: they have their own fields,
                    // and a message moving every second would mean a status write each time.
                    format!("{active} worker(s) active, {desired} desired"),
                )
            } else if load > 0 {
                (
                    false,
                    reason::NO_WORKERS_ALLOWED,
                    format!(
                        "{load} step(s) wait but spec.maxWorkers is {}; raise it so workers can start",
                        pool.spec.max_workers
                    ),
                )
            } else {
                (
                    true,
                    reason::IDLE,
                    "no steps queued; workers start when steps arrive".to_owned(),
                )
            }
        }
        Observation::RedisUnavailable { active, message } => {
            new.active_workers = *active;
            (
                false,
                reason::REDIS_UNAVAILABLE,
                format!("cannot read the queue depth: {message}"),
            )
        }
        Observation::Invalid { message } => (false, reason::INVALID_SPEC, message.clone()),
        Observation::JobCreateFailed {
            depth,
            active,
            desired,
            message,
        } => {
            new.queue_depth = depth.queued;
            new.running = depth.running;
            new.active_workers = *active;
            new.desired_workers = *desired;
            (
                false,
                reason::JOB_CREATE_FAILED,
                format!("cannot create worker Jobs: {message}"),
            )
        }
    };
    set_condition(
        &mut new.conditions,
        CONDITION_READY,
        ready,
        why,
        &message,
        pool.meta().generation,
        now,
    );
    new
}

fn latest<'a>(a: Option<&'a Time>, b: Option<&'a Time>) -> Option<&'a Time> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.0 > a.0 { b } else { a }),
        (a, b) => a.or(b),
    }
}
