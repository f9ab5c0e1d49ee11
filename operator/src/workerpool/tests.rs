//! Unit tests of the WorkerPool controller's pure parts: scaling arithmetic (with hostile
//! values), the worker Job builder, Job liveness, breakers and status building.

use std::collections::BTreeMap;

use crane_engine::queue::BreakerPhase;
use crane_engine::{BreakerState as EngineBreaker, QueueDepth};
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::ResourceExt;

use super::build::{self, Observation, SpecError, WorkerSettings, reason};
use crane_api::{BreakerState, CONDITION_READY, WorkerPool, WorkerPoolSpec, WorkerTemplate};

fn spec() -> WorkerPoolSpec {
    WorkerPoolSpec {
        min_workers: 0,
        max_workers: 20,
        target_queue_depth: 10,
        concurrency: 8,
        idle_timeout_seconds: 30,
        tools: None,
        template: None,
    }
}

fn pool_with(name: &str, spec: WorkerPoolSpec) -> WorkerPool {
    let mut pool = WorkerPool::new(name, spec);
    pool.metadata.namespace = Some("team-a".into());
    pool.metadata.uid = Some("uid-1234".into());
    pool.metadata.generation = Some(3);
    pool
}

fn pool() -> WorkerPool {
    pool_with("fast", spec())
}

fn settings() -> WorkerSettings {
    WorkerSettings {
        image: "crane:dev".into(),
        image_pull_policy: "IfNotPresent".into(),
        redis_url: "redis://127.0.0.1:6379".into(),
        metrics_port: 0,
        telemetry_env: Vec::new(),
    }
}

fn depth(queued: u64, running: u64, delayed: u64) -> QueueDepth {
    QueueDepth {
        queued,
        running,
        delayed,
    }
}

fn time(s: &str) -> Time {
    match s.parse() {
        Ok(t) => Time(t),
        Err(e) => panic!("bad fixture time {s}: {e}"),
    }
}

// ---- desired workers -------------------------------------------------------------------

#[test]
fn desired_is_ceil_of_load_over_target() {
    let d = |q, r| build::desired_workers(&depth(q, r, 0), 0, 20, 10);
    assert_eq!(d(0, 0), 0);
    assert_eq!(d(1, 0), 1);
    assert_eq!(d(10, 0), 1);
    assert_eq!(d(11, 0), 2);
    assert_eq!(d(5, 6), 2, "running steps count as load");
    assert_eq!(d(0, 21), 3);
    assert_eq!(d(200, 0), 20);
}

#[test]
fn desired_is_clamped_to_min_and_max() {
    assert_eq!(build::desired_workers(&depth(0, 0, 0), 2, 5, 10), 2);
    assert_eq!(build::desired_workers(&depth(1000, 0, 0), 2, 5, 10), 5);
    assert_eq!(build::desired_workers(&depth(30, 0, 0), 2, 5, 10), 3);
}

#[test]
fn desired_survives_hostile_values() {
    // targetQueueDepth 0 is rejected by the CRD; here it must not divide by zero.
    assert_eq!(build::desired_workers(&depth(7, 0, 0), 0, 20, 0), 7);
    assert_eq!(build::desired_workers(&depth(0, 0, 0), 0, 20, 0), 0);
    // A depth near u64::MAX must neither overflow (queued + running) nor wrap into u32.
    assert_eq!(
        build::desired_workers(&depth(u64::MAX / 2, u64::MAX / 2, 0), 0, 1000, 1),
        1000
    );
    assert_eq!(
        build::desired_workers(&depth(u64::MAX / 2, u64::MAX / 2, u64::MAX), 0, u32::MAX, 1),
        u32::MAX
    );
    // min > max (rejected at admission) must not panic like Ord::clamp; the maximum wins.
    assert_eq!(build::desired_workers(&depth(0, 0, 0), 9, 3, 10), 3);
    assert_eq!(build::desired_workers(&depth(1000, 0, 0), 9, 3, 10), 3);
    // maxWorkers 0: never a worker, whatever waits.
    assert_eq!(build::desired_workers(&depth(50, 0, 5), 0, 0, 10), 0);
}

#[test]
fn delayed_steps_keep_one_worker_to_promote_them() {
    assert_eq!(build::desired_workers(&depth(0, 0, 3), 0, 20, 10), 1);
    assert_eq!(
        build::desired_workers(&depth(0, 0, 300), 0, 20, 10),
        1,
        "delayed steps are not load"
    );
    assert_eq!(build::desired_workers(&depth(0, 0, 3), 4, 20, 10), 4);
}

// ---- validation --------------------------------------------------------------------------

#[test]
fn valid_pool_gives_the_engine_pool_name() {
    match build::validate(&pool()) {
        Ok(p) => assert_eq!(p.to_string(), "team-a/fast"),
        Err(e) => panic!("valid pool rejected: {e}"),
    }
}

#[test]
fn pool_names_the_engine_cannot_key_are_rejected_with_the_reason() {
    // Object names may contain dots and be 253 long; the engine's pool keys take DNS labels.
    for name in ["dotted.name", &"a".repeat(64), "a{b}"] {
        let err = build::validate(&pool_with(name, spec())).expect_err(name);
        assert!(matches!(err, SpecError::PoolName { .. }), "{name}: {err:?}");
        assert!(err.to_string().contains("cannot be served"), "{err}");
    }
    let mut p = pool();
    p.metadata.namespace = None;
    assert_eq!(
        build::validate(&p).expect_err("no namespace"),
        SpecError::NoNamespace
    );
}

#[test]
fn template_env_may_not_override_how_workers_reach_redis() {
    for reserved in build::RESERVED_ENV {
        let mut s = spec();
        s.template = Some(WorkerTemplate {
            env: Some(vec![
                EnvVar {
                    name: "RUST_LOG".into(),
                    value: Some("debug".into()),
                    ..EnvVar::default()
                },
                EnvVar {
                    name: reserved.into(),
                    value: Some("attacker".into()),
                    ..EnvVar::default()
                },
            ]),
            ..WorkerTemplate::default()
        });
        let err = build::validate(&pool_with("fast", s)).expect_err(reserved);
        assert_eq!(
            err,
            SpecError::ReservedEnv {
                index: 1,
                name: reserved.into()
            }
        );
        assert!(
            err.to_string().contains("spec.template.env[1].name"),
            "{err}"
        );
    }
}

// ---- Job builder ---------------------------------------------------------------------------

fn job_of(pool: &WorkerPool, settings: &WorkerSettings) -> Job {
    let engine_pool = match build::validate(pool) {
        Ok(p) => p,
        Err(e) => panic!("fixture pool invalid: {e}"),
    };
    build::worker_job(
        pool,
        &engine_pool,
        settings,
        &build::Mounts::default(),
        "x7k2q",
    )
}

#[test]
fn worker_job_runs_the_executor_for_this_pool() {
    let job = job_of(&pool(), &settings());
    assert_eq!(job.name_any(), "fast-worker-x7k2q");
    assert_eq!(job.namespace().as_deref(), Some("team-a"));
    let labels = job.labels();
    assert_eq!(
        labels.get("app.kubernetes.io/name").map(String::as_str),
        Some("crane-worker")
    );
    assert_eq!(
        labels.get("crane.dev/pool").map(String::as_str),
        Some("fast")
    );

    let owners = job.owner_references();
    assert_eq!(owners.len(), 1);
    let owner = &owners[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("WorkerPool", "fast", "uid-1234")
    );
    assert_eq!(owner.api_version, "crane.dev/v1alpha1");
    assert_eq!(owner.controller, Some(true));

    let spec = job.spec.as_ref().expect("job spec");
    assert_eq!(spec.backoff_limit, Some(0));
    assert_eq!(
        spec.ttl_seconds_after_finished,
        Some(build::FINISHED_JOB_TTL_SECONDS)
    );
    let tmpl = &spec.template;
    assert_eq!(
        tmpl.metadata.as_ref().and_then(|m| m.labels.clone()),
        Some(job.labels().clone())
    );
    let pod = tmpl.spec.as_ref().expect("pod spec");
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(pod.containers.len(), 1);
    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some("crane:dev"));
    assert_eq!(
        c.command.as_deref(),
        Some(
            &[
                "crane-executor",
                "work",
                "--redis",
                "redis://127.0.0.1:6379",
                "--pool",
                "team-a/fast",
                "--concurrency",
                "8",
                "--idle-timeout",
                "30"
            ]
            .map(String::from)[..]
        )
    );
    // Workers log in as their namespace's Redis user, from the Secret the operator keeps.
    let env = c.env.as_deref().unwrap_or_default();
    let from_secret: Vec<(&str, &str, &str)> = env
        .iter()
        .filter_map(|e| {
            let r = e.value_from.as_ref()?.secret_key_ref.as_ref()?;
            Some((e.name.as_str(), r.name.as_str(), r.key.as_str()))
        })
        .collect();
    assert_eq!(
        from_secret,
        [
            ("CRANE_REDIS_USERNAME", "crane-redis", "username"),
            ("CRANE_REDIS_PASSWORD", "crane-redis", "password")
        ]
    );
    assert_eq!(env.len(), 2, "no template env: {env:?}");
}

#[test]
fn workers_get_a_metrics_port_and_the_operators_otel_settings_when_configured() {
    let job = job_of(&pool(), &settings());
    let container = &job
        .spec
        .and_then(|s| s.template.spec)
        .expect("pod")
        .containers[0];
    assert!(container.ports.is_none());
    let command = container.command.clone().unwrap_or_default();
    assert!(!command.contains(&"--metrics-addr".to_owned()));

    let mut with = settings();
    with.metrics_port = 9090;
    with.telemetry_env = vec![("OTEL_EXPORTER_OTLP_ENDPOINT".into(), "http://c:4318".into())];
    let job = job_of(&pool(), &with);
    let container = &job
        .spec
        .and_then(|s| s.template.spec)
        .expect("pod")
        .containers[0];
    let port = &container.ports.as_ref().expect("ports")[0];
    assert_eq!(
        (port.name.as_deref(), port.container_port),
        (Some("metrics"), 9090)
    );
    let command = container.command.clone().unwrap_or_default();
    let at = command
        .iter()
        .position(|a| a == "--metrics-addr")
        .expect("flag");
    assert_eq!(command[at + 1], "0.0.0.0:9090");
    let env = container.env.clone().unwrap_or_default();
    assert!(
        env.iter().any(|e| e.name == "OTEL_EXPORTER_OTLP_ENDPOINT"
            && e.value.as_deref() == Some("http://c:4318"))
    );
}

#[test]
fn worker_job_has_the_restricted_security_context() {
    let job = job_of(&pool(), &settings());
    let pod = job.spec.and_then(|s| s.template.spec).expect("pod spec");
    let psc = pod.security_context.expect("pod security context");
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.run_as_user, Some(65532));
    assert_eq!(
        psc.seccomp_profile.map(|p| p.type_).as_deref(),
        Some("RuntimeDefault")
    );
    let sc = pod.containers[0]
        .security_context
        .clone()
        .expect("container security context");
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.run_as_user, Some(65532));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.privileged, None);
    assert_eq!(
        sc.capabilities.and_then(|c| c.drop),
        Some(vec!["ALL".to_owned()])
    );
    assert_eq!(
        sc.seccomp_profile.map(|p| p.type_).as_deref(),
        Some("RuntimeDefault")
    );
}

#[test]
fn worker_job_takes_its_namespaces_redis_identity_from_the_crane_redis_secret() {
    let mut s = spec();
    s.template = Some(WorkerTemplate {
        env: Some(vec![EnvVar {
            name: "RUST_LOG".into(),
            value: Some("debug".into()),
            ..EnvVar::default()
        }]),
        ..WorkerTemplate::default()
    });
    let job = job_of(&pool_with("fast", s), &settings());
    let c = job
        .spec
        .and_then(|s| s.template.spec)
        .expect("pod spec")
        .containers[0]
        .clone();
    let env = c.env.expect("env");
    let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        ["CRANE_REDIS_USERNAME", "CRANE_REDIS_PASSWORD", "RUST_LOG"]
    );
    for (var, key) in [(&env[0], "username"), (&env[1], "password")] {
        assert_eq!(var.value, None, "credentials never appear in the Job spec");
        let sel = var
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .expect("secretKeyRef");
        assert_eq!((sel.name.as_str(), sel.key.as_str()), ("crane-redis", key));
    }
    assert!(
        !c.command
            .unwrap_or_default()
            .iter()
            .any(|a| a.contains('@')),
        "no credentials in the arguments"
    );
}

#[test]
fn worker_job_applies_the_pool_template() {
    let mut s = spec();
    let resources = ResourceRequirements {
        limits: Some(BTreeMap::from([(
            "memory".into(),
            Quantity("256Mi".into()),
        )])),
        requests: Some(BTreeMap::from([("cpu".into(), Quantity("100m".into()))])),
        ..ResourceRequirements::default()
    };
    let tolerations = vec![Toleration {
        key: Some("dedicated".into()),
        operator: Some("Equal".into()),
        value: Some("crane".into()),
        effect: Some("NoSchedule".into()),
        ..Toleration::default()
    }];
    let node_selector = BTreeMap::from([("kubernetes.io/os".into(), "linux".into())]);
    s.template = Some(WorkerTemplate {
        resources: Some(resources.clone()),
        node_selector: Some(node_selector.clone()),
        tolerations: Some(tolerations.clone()),
        env: None,
    });
    s.concurrency = 32;
    s.idle_timeout_seconds = 5;
    let job = job_of(&pool_with("fast", s), &settings());
    let pod = job.spec.and_then(|s| s.template.spec).expect("pod spec");
    assert_eq!(pod.node_selector, Some(node_selector));
    assert_eq!(pod.tolerations, Some(tolerations));
    let c = &pod.containers[0];
    assert_eq!(c.resources, Some(resources));
    let cmd = c.command.clone().unwrap_or_default();
    assert_eq!(&cmd[6..], ["--concurrency", "32", "--idle-timeout", "5"]);
}

#[test]
fn worker_job_never_passes_zero_concurrency_or_a_never_ending_idle_timeout() {
    let mut s = spec();
    s.concurrency = 0;
    s.idle_timeout_seconds = 0;
    let job = job_of(&pool_with("fast", s), &settings());
    let cmd = job
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.containers[0].command.clone())
        .unwrap_or_default();
    assert_eq!(&cmd[6..], ["--concurrency", "1", "--idle-timeout", "1"]);
}

#[test]
fn hostile_redis_url_stays_one_argument() {
    let mut set = settings();
    set.redis_url = "redis://h:1/0; rm -rf / $(reboot) --pool other/pool".into();
    let job = job_of(&pool(), &set);
    let cmd = job
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.containers[0].command.clone())
        .unwrap_or_default();
    assert_eq!(cmd.len(), 10);
    assert_eq!(cmd[3], set.redis_url);
    assert_eq!(cmd[5], "team-a/fast");
}

#[test]
fn job_names_fit_a_label_value() {
    assert_eq!(build::job_name("fast", "abcde"), "fast-worker-abcde");
    let long = "a".repeat(63);
    let name = build::job_name(&long, "abcde");
    assert_eq!(name.len(), 63);
    assert!(name.ends_with("-worker-abcde"), "{name}");
    // A cut landing on '-' does not leave "--".
    let dashed = format!("{}-{}", "b".repeat(49), "c".repeat(13));
    let name = build::job_name(&dashed, "abcde");
    assert!(name.len() <= 63 && !name.contains("--"), "{name}");
    assert_eq!(name, format!("{}-worker-abcde", "b".repeat(49)));
}

// ---- Job liveness and ownership --------------------------------------------------------------

fn job_with(conditions: &[(&str, &str)]) -> Job {
    Job {
        status: Some(JobStatus {
            conditions: Some(
                conditions
                    .iter()
                    .map(|(t, s)| JobCondition {
                        type_: (*t).into(),
                        status: (*s).into(),
                        ..JobCondition::default()
                    })
                    .collect(),
            ),
            ..JobStatus::default()
        }),
        ..Job::default()
    }
}

#[test]
fn starting_and_running_jobs_are_active_finished_ones_are_not() {
    assert!(
        build::is_active(&Job::default()),
        "a Job just created has no status yet"
    );
    assert!(build::is_active(&job_with(&[])));
    assert!(build::is_active(&job_with(&[("Complete", "False")])));
    assert!(build::is_active(&job_with(&[("Suspended", "True")])));
    for t in ["Complete", "Failed", "SuccessCriteriaMet", "FailureTarget"] {
        assert!(!build::is_active(&job_with(&[(t, "True")])), "{t}");
    }
    let mut deleting = Job::default();
    deleting.metadata.deletion_timestamp = Some(time("2026-01-01T00:00:00Z"));
    assert!(!build::is_active(&deleting));
}

#[test]
fn only_jobs_controlled_by_this_pool_are_its_workers() {
    let p = pool();
    let owned = |uid: &str, controller: Option<bool>| {
        let mut job = Job::default();
        job.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "crane.dev/v1alpha1".into(),
            kind: "WorkerPool".into(),
            name: "fast".into(),
            uid: uid.into(),
            controller,
            block_owner_deletion: Some(true),
        }]);
        job
    };
    assert!(build::is_worker_of(&owned("uid-1234", Some(true)), &p));
    assert!(!build::is_worker_of(
        &owned("uid-of-an-older-pool", Some(true)),
        &p
    ));
    assert!(!build::is_worker_of(&owned("uid-1234", None), &p));
    assert!(!build::is_worker_of(&Job::default(), &p));
    let mut no_uid = pool();
    no_uid.metadata.uid = None;
    assert!(!build::is_worker_of(&owned("", Some(true)), &no_uid));
}

// ---- breakers and status ---------------------------------------------------------------------

fn engine_breaker(tool: &str, phase: BreakerPhase, failures: u32) -> EngineBreaker {
    EngineBreaker {
        tool: tool.into(),
        phase,
        failures,
        successes: 0,
        remaining_open_ms: 0,
    }
}

#[test]
fn breakers_are_sorted_deduplicated_and_bounded() {
    let got = build::breakers(&[
        engine_breaker("wait", BreakerPhase::Open, 5),
        engine_breaker("calculator", BreakerPhase::HalfOpen, 0),
        engine_breaker("wait", BreakerPhase::Closed, 0),
    ]);
    assert_eq!(got.len(), 2);
    assert_eq!(
        (got[0].tool.as_str(), got[0].state),
        ("calculator", BreakerState::HalfOpen)
    );
    assert_eq!(
        (got[1].tool.as_str(), got[1].state, got[1].failures),
        ("wait", BreakerState::Open, 5)
    );

    let many: Vec<EngineBreaker> = (0..1000)
        .map(|i| {
            engine_breaker(
                &format!("tool{i:04}{}", "x".repeat(500)),
                BreakerPhase::Closed,
                0,
            )
        })
        .collect();
    let got = build::breakers(&many);
    assert_eq!(got.len(), build::MAX_BREAKERS_IN_STATUS);
    assert!(got.iter().all(|b| b.tool.len() <= 128));
}

fn ready(status: &crane_api::WorkerPoolStatus) -> (String, String, String, Time) {
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION_READY)
        .expect("Ready condition");
    (
        c.status.clone(),
        c.reason.clone(),
        c.message.clone(),
        c.last_transition_time.clone(),
    )
}

fn scaled(q: u64, r: u64, active: u32, desired: u32, created: u32) -> Observation {
    Observation::Scaled {
        depth: depth(q, r, 0),
        breakers: vec![],
        active,
        desired,
        created,
        not_starting: None,
    }
}

#[test]
fn status_reports_the_scaling_and_moves_last_scale_time_only_on_scale_up() {
    let mut p = pool();
    let t1 = time("2026-01-01T00:00:00Z");
    let st = build::status(&p, &scaled(25, 5, 3, 3, 3), &t1, None);
    assert_eq!(
        (
            st.queue_depth,
            st.running,
            st.active_workers,
            st.desired_workers
        ),
        (25, 5, 3, 3)
    );
    assert_eq!(st.last_scale_time, Some(t1.clone()));
    assert_eq!(st.observed_generation, Some(3));
    let (s, r, m, ltt) = ready(&st);
    assert_eq!((s.as_str(), r.as_str()), ("True", reason::WORKERS_ACTIVE));
    assert!(m.contains("3 worker(s) active"), "{m}");
    assert_eq!(ltt, t1);

    p.status = Some(st.clone());
    let t2 = time("2026-01-01T00:00:07Z");
    let st2 = build::status(&p, &scaled(0, 0, 0, 0, 0), &t2, None);
    assert_eq!(
        st2.last_scale_time,
        Some(t1.clone()),
        "no Job created: lastScaleTime stays"
    );
    let (s, r, _, ltt) = ready(&st2);
    assert_eq!((s.as_str(), r.as_str()), ("True", reason::IDLE));
    assert_eq!(
        ltt, t1,
        "Ready stayed True: lastTransitionTime does not move"
    );
}

#[test]
fn the_same_observation_builds_the_same_status_so_nothing_is_written() {
    let mut p = pool();
    let obs = scaled(4, 2, 1, 1, 0);
    let st = build::status(&p, &obs, &time("2026-01-01T00:00:00Z"), None);
    p.status = Some(st.clone());
    assert_eq!(
        build::status(&p, &obs, &time("2026-01-01T00:05:00Z"), None),
        st
    );
}

#[test]
fn redis_errors_make_the_pool_unready_and_keep_the_last_numbers() {
    let mut p = pool();
    let t1 = time("2026-01-01T00:00:00Z");
    p.status = Some(build::status(&p, &scaled(7, 1, 2, 1, 0), &t1, None));
    let t2 = time("2026-01-01T00:00:09Z");
    let st = build::status(
        &p,
        &Observation::RedisUnavailable {
            active: 1,
            message: "redis error while reading queue depth: connection refused".into(),
        },
        &t2,
        None,
    );
    assert_eq!((st.queue_depth, st.running, st.active_workers), (7, 1, 1));
    let (s, r, m, ltt) = ready(&st);
    assert_eq!(
        (s.as_str(), r.as_str()),
        ("False", reason::REDIS_UNAVAILABLE)
    );
    assert!(m.contains("connection refused"), "{m}");
    assert_eq!(ltt, t2, "True → False moves lastTransitionTime");
}

#[test]
fn a_pool_that_may_not_start_workers_says_why() {
    let mut s = spec();
    s.max_workers = 0;
    let p = pool_with("fast", s);
    let st = build::status(
        &p,
        &scaled(12, 0, 0, 0, 0),
        &time("2026-01-01T00:00:00Z"),
        None,
    );
    let (s, r, m, _) = ready(&st);
    assert_eq!(
        (s.as_str(), r.as_str()),
        ("False", reason::NO_WORKERS_ALLOWED)
    );
    assert!(m.contains("spec.maxWorkers is 0"), "{m}");
}

#[test]
fn invalid_and_failed_creates_are_reported_with_bounded_messages() {
    let p = pool();
    let st = build::status(
        &p,
        &Observation::Invalid {
            message: "x".repeat(100_000),
        },
        &time("2026-01-01T00:00:00Z"),
        None,
    );
    let (s, r, m, _) = ready(&st);
    assert_eq!((s.as_str(), r.as_str()), ("False", reason::INVALID_SPEC));
    assert!(m.len() <= 1024, "{}", m.len());

    let st = build::status(
        &p,
        &Observation::JobCreateFailed {
            depth: depth(30, 0, 0),
            active: 1,
            desired: 3,
            message: "jobs.batch is forbidden".into(),
        },
        &time("2026-01-01T00:00:00Z"),
        None,
    );
    assert_eq!(
        (st.active_workers, st.desired_workers, st.queue_depth),
        (1, 3, 30)
    );
    let (s, r, m, _) = ready(&st);
    assert_eq!(
        (s.as_str(), r.as_str()),
        ("False", reason::JOB_CREATE_FAILED)
    );
    assert!(m.contains("forbidden"), "{m}");
}

#[test]
fn last_scale_time_survives_a_stale_cached_pool() {
    // The reconcile right after a scale-up may see the pool from before that status write.
    let stale = pool();
    let t1 = time("2026-01-01T00:00:00Z");
    let t2 = time("2026-01-01T00:00:01Z");
    let st = build::status(&stale, &scaled(3, 0, 1, 1, 0), &t2, Some(&t1));
    assert_eq!(st.last_scale_time, Some(t1.clone()));
    // A newer time in the object wins over an older memory, and a scale-up now wins over both.
    let mut fresh = pool();
    fresh.status = Some(crane_api::WorkerPoolStatus {
        last_scale_time: Some(t2.clone()),
        ..st
    });
    let st = build::status(&fresh, &scaled(3, 0, 1, 1, 0), &t2, Some(&t1));
    assert_eq!(st.last_scale_time, Some(t2.clone()));
    let t3 = time("2026-01-01T00:00:02Z");
    let st = build::status(&fresh, &scaled(9, 0, 1, 2, 1), &t3, Some(&t1));
    assert_eq!(st.last_scale_time, Some(t3));
    // Also kept through errors.
    let st = build::status(
        &stale,
        &Observation::RedisUnavailable {
            active: 0,
            message: "down".into(),
        },
        &t2,
        Some(&t1),
    );
    assert_eq!(st.last_scale_time, Some(t1));
}

#[test]
fn a_pool_that_lists_its_tools_has_workers_that_serve_only_those() {
    let command = |pool: &WorkerPool| {
        job_of(pool, &settings())
            .spec
            .and_then(|s| s.template.spec)
            .map(|p| p.containers[0].command.clone().unwrap_or_default())
            .unwrap_or_default()
    };
    assert!(!command(&pool()).contains(&"--tools".to_owned()));
    let mut limited = pool();
    limited.spec.tools = Some(vec!["calculator".into(), "todo_store.add".into()]);
    let cmd = command(&limited);
    let at = cmd.iter().position(|a| a == "--tools");
    assert_eq!(
        at.and_then(|i| cmd.get(i + 1)).map(String::as_str),
        Some("calculator,todo_store.add")
    );
}

#[test]
fn a_pool_whose_workers_cannot_start_is_not_ready_and_says_why() {
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateWaiting, ContainerStatus, Pod, PodStatus,
    };
    let pod = |reason: &str, message: &str| Pod {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some("fast-worker-x7k2q-abcde".into()),
            ..Default::default()
        },
        status: Some(PodStatus {
            container_statuses: Some(vec![ContainerStatus {
                name: "worker".into(),
                state: Some(ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some(reason.into()),
                        message: Some(message.into()),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(build::stuck_reason(&[pod("ContainerCreating", "")]), None);
    let why = build::stuck_reason(&[
        pod("ContainerCreating", ""),
        pod(
            "CreateContainerConfigError",
            "secret \"crane-redis\" not found",
        ),
    ]);
    assert_eq!(
        why.as_deref(),
        Some(
            "pod fast-worker-x7k2q-abcde: CreateContainerConfigError: secret \"crane-redis\" not found"
        )
    );
    let obs = Observation::Scaled {
        depth: depth(3, 0, 0),
        breakers: vec![],
        active: 1,
        desired: 1,
        created: 0,
        not_starting: why,
    };
    let st = build::status(&pool(), &obs, &time("2026-01-01T00:00:00Z"), None);
    let (s, r, m, _) = ready(&st);
    assert_eq!(
        (s.as_str(), r.as_str()),
        ("False", reason::WORKERS_NOT_STARTING)
    );
    assert!(m.contains("CreateContainerConfigError"), "{m}");
}

#[test]
fn workers_mount_the_secrets_tool_headers_reference() {
    let engine_pool = build::validate(&pool()).unwrap_or_else(|e| panic!("{e}"));
    let mounted = build::Mounts {
        secrets: vec!["weather".to_owned(), "mcp-key".to_owned()],
        login: "2026-11-29T12:00:00Z".to_owned(),
    };
    let job = build::worker_job(&pool(), &engine_pool, &settings(), &mounted, "x7k2q");
    assert!(build::mounts_current_secrets(&job, &mounted.hash()));
    // Another set of Secrets, or a rotated Redis login, makes the worker outdated.
    for other in [
        build::Mounts {
            secrets: Vec::new(),
            ..mounted.clone()
        },
        build::Mounts {
            login: "2026-11-29T13:00:00Z".to_owned(),
            ..mounted.clone()
        },
    ] {
        assert!(!build::mounts_current_secrets(&job, &other.hash()));
    }
    let pod = job.spec.and_then(|s| s.template.spec).unwrap_or_default();
    let volumes = pod.volumes.unwrap_or_default();
    assert_eq!(volumes.len(), 2);
    let secret = volumes[0].secret.clone().unwrap_or_default();
    assert_eq!(
        (secret.secret_name.as_deref(), secret.optional),
        (Some("weather"), Some(true))
    );
    // The kubelet writes the files as root with this mode: the worker, not root, reads
    // them through its group, which must own the volume (fsGroup).
    let mode = secret.default_mode.unwrap_or(0o644);
    assert_eq!(mode & 0o007, 0, "not readable by others: {mode:o}");
    assert_ne!(mode & 0o040, 0, "group-readable: {mode:o}");
    let security = pod.security_context.clone().unwrap_or_default();
    assert_eq!(security.run_as_user, Some(65532));
    assert_eq!(
        security.fs_group, security.run_as_group,
        "the Secret files belong to the worker's group"
    );
    let mounts = pod.containers[0].volume_mounts.clone().unwrap_or_default();
    assert_eq!(mounts[1].mount_path, "/var/run/crane/secrets/mcp-key");
    assert_eq!(mounts[1].read_only, Some(true));
    assert_eq!(
        pod.automount_service_account_token,
        Some(false),
        "Secrets come as volumes, not through the API"
    );
    let joined = build::Mounts {
        secrets: vec!["weathermcp-key".to_owned()],
        ..mounted.clone()
    };
    assert_ne!(mounted.hash(), joined.hash());
}
