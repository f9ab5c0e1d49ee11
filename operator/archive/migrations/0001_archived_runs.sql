-- One row per AgentRun that left the cluster, written once by the operator's finalizer.
-- Everything a list shows is a plain column (read without touching the large JSON, which
-- PostgreSQL keeps out of line); spec, status and the engine's full report are kept whole.
CREATE TABLE archived_runs (
    uid             text PRIMARY KEY,             -- metadata.uid: the write is keyed by it
    namespace       text        NOT NULL,
    name            text        NOT NULL,
    phase           text        NOT NULL,         -- the last phase (a run deleted while running keeps Running)
    created_at      timestamptz NOT NULL,         -- metadata.creationTimestamp
    started_at      timestamptz,
    finished_at     timestamptz,
    archived_at     timestamptz NOT NULL DEFAULT now(), -- retention counts from here
    prompt          text,
    plan_source     text,
    worker_pool     text        NOT NULL,
    steps_total     integer     NOT NULL,
    steps_succeeded integer     NOT NULL,
    error           text,
    total_tokens    bigint      NOT NULL DEFAULT 0,
    llm_calls       bigint      NOT NULL DEFAULT 0,
    tool_calls      bigint      NOT NULL DEFAULT 0,
    labels          jsonb       NOT NULL DEFAULT '{}',
    spec            jsonb       NOT NULL,
    status          jsonb       NOT NULL,         -- as the object last had it (outputs truncated)
    report          jsonb,                        -- the engine's report: full outputs and errors; NULL when Redis had none
    result          jsonb                         -- full result (from the report when there is one)
);

-- Lists: newest first within a namespace, keyset-paginated on (created_at, uid).
CREATE INDEX archived_runs_list ON archived_runs (namespace, created_at DESC, uid DESC);
-- Lookups by name (a name can be reused: the newest wins).
CREATE INDEX archived_runs_name ON archived_runs (namespace, name, created_at DESC);
-- Retention prunes the oldest first.
CREATE INDEX archived_runs_archived_at ON archived_runs (archived_at);
