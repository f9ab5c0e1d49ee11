//! The todo store tools (`todo_store.add|list|get|complete|delete`) over a storage trait with
//! two real backends: in-process memory (for `crane-executor run`) and Redis (for workers).
//!
//! Promises, identical in both backends (one shared test suite checks them):
//! - Todos are scoped per namespace; no namespace string, however hostile, reaches another
//!   namespace's todos. Ids come from a per-namespace counter starting at 1 and are never
//!   reused, even after a delete.
//! - `add` is idempotent per idempotency key for 7 days: a repeated key returns the todo as
//!   that first `add` created it (like a replayed HTTP response) and adds nothing.
//! - Titles are stored byte for byte; nothing in them is interpreted.
//!
//! Redis layout (under the namespace's prefix, so only its own Redis user reaches them, with
//! a hash tag on the escaped namespace, so every key of a namespace is in one slot and the
//! scripts are Redis Cluster safe): `crane:ns:NS:{todo:NS}:seq` (INCR counter), `…:items`
//! (hash id -> title), `…:done` (set of completed ids), `…:idem:KEY` (`ID:TITLE`, 7-day TTL).
//! NS is the namespace with every byte outside `[A-Za-z0-9._-]` percent-encoded, an
//! injective mapping that never yields `{`, `}` or `:` (a Kubernetes namespace, a DNS label,
//! is its own escape).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crane_core::builtins::MAX_TITLE_CHARS;
use crane_core::builtins::{TODO_ADD, TODO_COMPLETE, TODO_DELETE, TODO_GET, TODO_LIST};
use crane_core::tool::{Tool, ToolContext, ToolError, ToolFuture};

/// The future a store returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// How long `add` remembers an idempotency key.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// Longest namespace, in bytes (Kubernetes namespaces have at most 63).
pub const MAX_NAMESPACE_BYTES: usize = 253;

/// One todo item, as the tools return it: `{id, title, completed}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Todo {
    pub id: u64,
    pub title: String,
    pub completed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not be reached or failed; a retry may help.
    #[error("todo store unavailable: {0}")]
    Unavailable(String),
    /// The namespace is empty or too long (checked identically by both backends).
    #[error("invalid todo namespace {0:?}: must be 1 to 253 bytes")]
    InvalidNamespace(String),
    /// The backend holds data this code did not write; retrying cannot help.
    #[error("todo store holds malformed data: {0}")]
    Corrupt(String),
}

/// Where todos live. Scoped per namespace; `add` is idempotent per `idempotency_key`
/// (the tool passes `<run-id>/<step-id>`), so a retried step never adds twice.
pub trait TodoStore: Send + Sync {
    fn add<'a>(
        &'a self,
        namespace: &'a str,
        idempotency_key: &'a str,
        title: &'a str,
    ) -> StoreFuture<'a, Todo>;
    fn list<'a>(&'a self, namespace: &'a str) -> StoreFuture<'a, Vec<Todo>>;
    fn get<'a>(&'a self, namespace: &'a str, id: u64) -> StoreFuture<'a, Option<Todo>>;
    /// Marks the todo completed; `None` when there is no such todo.
    fn complete<'a>(&'a self, namespace: &'a str, id: u64) -> StoreFuture<'a, Option<Todo>>;
    /// Deletes and returns the todo; `None` when there is no such todo.
    fn delete<'a>(&'a self, namespace: &'a str, id: u64) -> StoreFuture<'a, Option<Todo>>;
}

fn check_namespace(namespace: &str) -> Result<(), StoreError> {
    if namespace.is_empty() || namespace.len() > MAX_NAMESPACE_BYTES {
        let shown: String = namespace.chars().take(64).collect();
        return Err(StoreError::InvalidNamespace(shown));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Memory backend

#[derive(Default)]
struct Namespace {
    next_id: u64,
    items: BTreeMap<u64, Todo>,
    /// Idempotency key -> (todo as created, when).
    seen: HashMap<String, (Todo, Instant)>,
}

/// In-process store for `crane-executor run`: one process, one run, nothing persisted.
#[derive(Default)]
pub struct MemoryTodoStore {
    namespaces: Mutex<HashMap<String, Namespace>>,
}

impl MemoryTodoStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(
        &self,
        namespace: &str,
        f: impl FnOnce(&mut Namespace) -> T,
    ) -> Result<T, StoreError> {
        check_namespace(namespace)?;
        // A panic elsewhere while holding the lock leaves consistent data (every mutation
        // below is a single map operation), so a poisoned lock is safe to reuse.
        let mut all = self
            .namespaces
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(f(all.entry(namespace.to_owned()).or_default()))
    }
}

impl TodoStore for MemoryTodoStore {
    fn add<'a>(
        &'a self,
        namespace: &'a str,
        idempotency_key: &'a str,
        title: &'a str,
    ) -> StoreFuture<'a, Todo> {
        Box::pin(async move {
            self.with(namespace, |ns| {
                let now = Instant::now();
                ns.seen
                    .retain(|_, (_, at)| now.duration_since(*at) < IDEMPOTENCY_TTL);
                if let Some((todo, _)) = ns.seen.get(idempotency_key) {
                    return todo.clone();
                }
                ns.next_id += 1;
                let todo = Todo {
                    id: ns.next_id,
                    title: title.to_owned(),
                    completed: false,
                };
                ns.items.insert(todo.id, todo.clone());
                ns.seen
                    .insert(idempotency_key.to_owned(), (todo.clone(), now));
                todo
            })
        })
    }

    fn list<'a>(&'a self, namespace: &'a str) -> StoreFuture<'a, Vec<Todo>> {
        Box::pin(async move { self.with(namespace, |ns| ns.items.values().cloned().collect()) })
    }

    fn get<'a>(&'a self, namespace: &'a str, id: u64) -> StoreFuture<'a, Option<Todo>> {
        Box::pin(async move { self.with(namespace, |ns| ns.items.get(&id).cloned()) })
    }

    fn complete<'a>(&'a self, namespace: &'a str, id: u64) -> StoreFuture<'a, Option<Todo>> {
        Box::pin(async move {
            self.with(namespace, |ns| {
                ns.items.get_mut(&id).map(|t| {
                    t.completed = true;
                    t.clone()
                })
            })
        })
    }

    fn delete<'a>(&'a self, namespace: &'a str, id: u64) -> StoreFuture<'a, Option<Todo>> {
        Box::pin(async move { self.with(namespace, |ns| ns.items.remove(&id)) })
    }
}

// ---------------------------------------------------------------------------------------------
// Redis backend

/// Returns `{id, title, completed}` where `completed` is 0/1. Replays the recorded todo when
/// the idempotency key was seen; otherwise creates one and records the key.
const ADD_SCRIPT: &str = r#"
local seen = redis.call('GET', KEYS[3])
if seen then
  local sep = string.find(seen, ':', 1, true)
  if not sep then return redis.error_reply('malformed idempotency record') end
  return {tonumber(string.sub(seen, 1, sep - 1)), string.sub(seen, sep + 1), 0}
end
local id = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], id, ARGV[1])
redis.call('SET', KEYS[3], id .. ':' .. ARGV[1], 'EX', ARGV[2])
return {id, ARGV[1], 0}
"#;

/// Returns `{title, completed}` after marking the todo done, or nil when there is none.
const COMPLETE_SCRIPT: &str = r#"
local title = redis.call('HGET', KEYS[1], ARGV[1])
if not title then return nil end
redis.call('SADD', KEYS[2], ARGV[1])
return {title, 1}
"#;

/// Returns `{title, completed}` of the removed todo, or nil when there is none.
const DELETE_SCRIPT: &str = r#"
local title = redis.call('HGET', KEYS[1], ARGV[1])
if not title then return nil end
local done = redis.call('SREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
return {title, done}
"#;

/// Todos in Redis, shared by every worker (see the module docs for the key layout).
#[derive(Clone)]
pub struct RedisTodoStore {
    conn: ConnectionManager,
    add: Arc<redis::Script>,
    complete: Arc<redis::Script>,
    delete: Arc<redis::Script>,
}

/// The keys of one namespace.
struct Keys {
    seq: String,
    items: String,
    done: String,
    prefix: String,
}

impl Keys {
    fn new(namespace: &str) -> Result<Self, StoreError> {
        check_namespace(namespace)?;
        let ns = escape_namespace(namespace);
        let prefix = format!("crane:ns:{ns}:{{todo:{ns}}}:");
        Ok(Self {
            seq: format!("{prefix}seq"),
            items: format!("{prefix}items"),
            done: format!("{prefix}done"),
            prefix,
        })
    }

    fn idempotency(&self, key: &str) -> String {
        format!("{}idem:{key}", self.prefix)
    }
}

/// Percent-encodes every byte outside `[A-Za-z0-9._-]` (including `%` itself), so the mapping
/// is injective and the result never contains `{`, `}`, `:` or whitespace.
pub fn escape_namespace(namespace: &str) -> String {
    let mut out = String::with_capacity(namespace.len());
    for b in namespace.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn corrupt_id(raw: &str) -> StoreError {
    StoreError::Corrupt(format!("todo id {raw:?} is not a positive integer"))
}

impl RedisTodoStore {
    pub fn new(conn: ConnectionManager) -> Self {
        Self {
            conn,
            add: Arc::new(redis::Script::new(ADD_SCRIPT)),
            complete: Arc::new(redis::Script::new(COMPLETE_SCRIPT)),
            delete: Arc::new(redis::Script::new(DELETE_SCRIPT)),
        }
    }

    async fn mutate(
        &self,
        script: &redis::Script,
        namespace: &str,
        id: u64,
    ) -> Result<Option<Todo>, StoreError> {
        let keys = Keys::new(namespace)?;
        let mut conn = self.conn.clone();
        let reply: Option<(String, u8)> = script
            .key(&keys.items)
            .key(&keys.done)
            .arg(id)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(reply.map(|(title, done)| Todo {
            id,
            title,
            completed: done != 0,
        }))
    }
}

impl TodoStore for RedisTodoStore {
    fn add<'a>(
        &'a self,
        namespace: &'a str,
        idempotency_key: &'a str,
        title: &'a str,
    ) -> StoreFuture<'a, Todo> {
        Box::pin(async move {
            let keys = Keys::new(namespace)?;
            let mut conn = self.conn.clone();
            let (id, title, _): (u64, String, u8) = self
                .add
                .key(&keys.seq)
                .key(&keys.items)
                .key(keys.idempotency(idempotency_key))
                .arg(title)
                .arg(IDEMPOTENCY_TTL.as_secs())
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            Ok(Todo {
                id,
                title,
                completed: false,
            })
        })
    }

    fn list<'a>(&'a self, namespace: &'a str) -> StoreFuture<'a, Vec<Todo>> {
        Box::pin(async move {
            let keys = Keys::new(namespace)?;
            let mut conn = self.conn.clone();
            let (items, done): (HashMap<String, String>, Vec<String>) = redis::pipe()
                .atomic()
                .hgetall(&keys.items)
                .smembers(&keys.done)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            let mut todos = items
                .into_iter()
                .map(|(raw, title)| {
                    let id: u64 = raw.parse().map_err(|_| corrupt_id(&raw))?;
                    Ok(Todo {
                        id,
                        completed: done.contains(&raw),
                        title,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            todos.sort_by_key(|t| t.id);
            Ok(todos)
        })
    }

    fn get<'a>(&'a self, namespace: &'a str, id: u64) -> StoreFuture<'a, Option<Todo>> {
        Box::pin(async move {
            let keys = Keys::new(namespace)?;
            let mut conn = self.conn.clone();
            let (title, done): (Option<String>, bool) = redis::pipe()
                .atomic()
                .hget(&keys.items, id)
                .sismember(&keys.done, id)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            Ok(title.map(|title| Todo {
                id,
                title,
                completed: done,
            }))
        })
    }

    fn complete<'a>(&'a self, namespace: &'a str, id: u64) -> StoreFuture<'a, Option<Todo>> {
        Box::pin(self.mutate(&self.complete, namespace, id))
    }

    fn delete<'a>(&'a self, namespace: &'a str, id: u64) -> StoreFuture<'a, Option<Todo>> {
        Box::pin(self.mutate(&self.delete, namespace, id))
    }
}

// ---------------------------------------------------------------------------------------------
// Tools

/// The five todo tools over one store, by name.
pub fn todo_tools(store: Arc<dyn TodoStore>) -> Vec<(&'static str, Arc<dyn Tool>)> {
    [
        TodoOp::Add,
        TodoOp::List,
        TodoOp::Get,
        TodoOp::Complete,
        TodoOp::Delete,
    ]
    .into_iter()
    .map(|op| {
        let tool = TodoTool {
            op,
            store: store.clone(),
        };
        (tool.name(), Arc::new(tool) as Arc<dyn Tool>)
    })
    .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TodoOp {
    Add,
    List,
    Get,
    Complete,
    Delete,
}

struct TodoTool {
    op: TodoOp,
    store: Arc<dyn TodoStore>,
}

impl TodoTool {
    async fn run(&self, ctx: &ToolContext, input: &Value) -> Result<Value, ToolError> {
        let name = self.name();
        let fields = input.as_object().ok_or_else(|| {
            ToolError::InvalidInput(format!("{name}: input must be a JSON object"))
        })?;
        let allowed: &[&str] = match self.op {
            TodoOp::Add => &["title"],
            TodoOp::List => &[],
            TodoOp::Get | TodoOp::Complete | TodoOp::Delete => &["id"],
        };
        if let Some(extra) = fields.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(ToolError::InvalidInput(format!(
                "{name}: unknown field `{extra}`"
            )));
        }
        let ns = ctx.namespace.as_str();
        let store = &*self.store;
        let found = match self.op {
            TodoOp::Add => {
                let title = parse_title(name, fields.get("title"))?;
                let key = format!("{}/{}", ctx.run_id, ctx.step_id);
                return to_json(store.add(ns, &key, title).await.map_err(store_error)?);
            }
            TodoOp::List => {
                return to_json(store.list(ns).await.map_err(store_error)?);
            }
            TodoOp::Get => {
                let id = parse_id(name, fields.get("id"))?;
                (id, store.get(ns, id).await)
            }
            TodoOp::Complete => {
                let id = parse_id(name, fields.get("id"))?;
                (id, store.complete(ns, id).await)
            }
            TodoOp::Delete => {
                let id = parse_id(name, fields.get("id"))?;
                (id, store.delete(ns, id).await)
            }
        };
        match found {
            (_, Ok(Some(todo))) => to_json(todo),
            (id, Ok(None)) => Err(ToolError::Failed(format!(
                "no todo with id {id} in namespace {ns}"
            ))),
            (_, Err(e)) => Err(store_error(e)),
        }
    }
}

fn to_json<T: Serialize>(value: T) -> Result<Value, ToolError> {
    serde_json::to_value(value)
        .map_err(|e| ToolError::Failed(format!("could not encode the todo: {e}")))
}

fn store_error(e: StoreError) -> ToolError {
    match e {
        StoreError::Unavailable(_) => ToolError::Transient(e.to_string()),
        StoreError::InvalidNamespace(_) | StoreError::Corrupt(_) => {
            ToolError::Failed(e.to_string())
        }
    }
}

fn parse_title<'v>(tool: &str, raw: Option<&'v Value>) -> Result<&'v str, ToolError> {
    let bad = |why: &str| ToolError::InvalidInput(format!("{tool}: /title {why}"));
    let title = match raw {
        None => return Err(bad("is required")),
        Some(Value::String(s)) => s.as_str(),
        Some(other) => return Err(bad(&format!("must be a string, got {other}"))),
    };
    if title.trim().is_empty() {
        return Err(bad("must not be empty or blank"));
    }
    let chars = title.chars().count();
    if chars > MAX_TITLE_CHARS {
        return Err(bad(&format!(
            "is {chars} characters long; the limit is {MAX_TITLE_CHARS}"
        )));
    }
    Ok(title)
}

fn parse_id(tool: &str, raw: Option<&Value>) -> Result<u64, ToolError> {
    let Some(raw) = raw else {
        return Err(ToolError::InvalidInput(format!("{tool}: /id is required")));
    };
    // JSON Schema counts 7.0 as an integer, so this does too (below 2^53, where f64 is exact).
    let id = match raw {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 1.0 && *f < 9e15)
                .map(|f| f as u64)
        }),
        _ => None,
    };
    match id {
        Some(id) if id >= 1 => Ok(id),
        _ => Err(ToolError::InvalidInput(format!(
            "{tool}: /id must be an integer >= 1, got {raw}"
        ))),
    }
}

impl TodoTool {
    fn name(&self) -> &'static str {
        match self.op {
            TodoOp::Add => TODO_ADD,
            TodoOp::List => TODO_LIST,
            TodoOp::Get => TODO_GET,
            TodoOp::Complete => TODO_COMPLETE,
            TodoOp::Delete => TODO_DELETE,
        }
    }
}

impl Tool for TodoTool {
    fn execute<'a>(&'a self, ctx: &'a ToolContext, input: Value) -> ToolFuture<'a> {
        Box::pin(async move { self.run(ctx, &input).await })
    }

    /// Todos live in the store every worker shares.
    fn calls_out(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crane_testkit::RedisServer;
    use serde_json::json;

    const HOSTILE_NAMESPACES: &[&str] = &[
        "team-a}",
        "{team-a}",
        "team-a:items",
        "team-a}:items",
        "team-a%7D",
        "team-a%",
        "team a",
        "team-a\n",
        "team-a\0",
        "ü-😀",
        "*",
        "..",
        "crane:todo:{team-a}",
    ];

    fn ctx(namespace: &str, run: &str, step: u32) -> ToolContext {
        ToolContext {
            namespace: namespace.into(),
            run_id: run.into(),
            step_id: step,
            attempt: 1,
        }
    }

    struct Tools(Vec<(&'static str, Arc<dyn Tool>)>);

    impl Tools {
        async fn call(
            &self,
            name: &str,
            ctx: &ToolContext,
            input: Value,
        ) -> Result<Value, ToolError> {
            let Some((_, tool)) = self.0.iter().find(|(n, _)| *n == name) else {
                return Err(ToolError::Failed(format!("test: no tool {name}")));
            };
            tool.execute(ctx, input).await
        }

        /// `todo_store.add {title}`.
        async fn add(&self, ctx: &ToolContext, title: &str) -> Result<Value, ToolError> {
            self.call("todo_store.add", ctx, json!({ "title": title }))
                .await
        }
    }

    async fn redis_store(server: &RedisServer) -> Arc<dyn TodoStore> {
        let client = redis::Client::open(server.url()).expect("client");
        let conn = ConnectionManager::new(client).await.expect("connect");
        Arc::new(RedisTodoStore::new(conn))
    }

    /// The one behaviour suite both backends must pass.
    async fn suite(store: Arc<dyn TodoStore>) {
        crud(store.clone()).await;
        idempotent_add(store.clone()).await;
        namespace_isolation(store.clone()).await;
        hostile_titles(store.clone()).await;
        hostile_inputs(store.clone()).await;
    }

    async fn crud(store: Arc<dyn TodoStore>) {
        let tools = Tools(todo_tools(store));
        let c = ctx("crud", "run-1", 1);
        assert_eq!(
            tools.call("todo_store.list", &c, json!({})).await,
            Ok(json!([]))
        );
        let milk = tools.add(&c, "Buy milk").await;
        assert_eq!(
            milk,
            Ok(json!({"id": 1, "title": "Buy milk", "completed": false}))
        );
        let eggs = tools.add(&ctx("crud", "run-1", 2), "Eggs").await;
        assert_eq!(
            eggs,
            Ok(json!({"id": 2, "title": "Eggs", "completed": false}))
        );
        // Ten more so ordering by id is numeric, not lexicographic ("10" < "2").
        for step in 3..=12 {
            let added = tools
                .call(
                    "todo_store.add",
                    &ctx("crud", "run-1", step),
                    json!({"title": format!("t{step}")}),
                )
                .await;
            assert_eq!(added.ok().map(|v| v["id"].clone()), Some(json!(step)));
        }
        let ids: Vec<Value> = match tools.call("todo_store.list", &c, json!({})).await {
            Ok(Value::Array(items)) => items.iter().map(|t| t["id"].clone()).collect(),
            other => panic!("list: {other:?}"),
        };
        assert_eq!(ids, (1..=12).map(|i| json!(i)).collect::<Vec<_>>());

        assert_eq!(
            tools.call("todo_store.get", &c, json!({"id": 2})).await,
            Ok(json!({"id": 2, "title": "Eggs", "completed": false}))
        );
        assert_eq!(
            tools
                .call("todo_store.complete", &c, json!({"id": 2}))
                .await,
            Ok(json!({"id": 2, "title": "Eggs", "completed": true}))
        );
        assert_eq!(
            tools
                .call("todo_store.complete", &c, json!({"id": 2}))
                .await,
            Ok(json!({"id": 2, "title": "Eggs", "completed": true}))
        );
        assert_eq!(
            tools.call("todo_store.get", &c, json!({"id": 2.0})).await,
            Ok(json!({"id": 2, "title": "Eggs", "completed": true}))
        );
        assert_eq!(
            tools.call("todo_store.delete", &c, json!({"id": 2})).await,
            Ok(json!({"id": 2, "title": "Eggs", "completed": true}))
        );
        for op in ["todo_store.get", "todo_store.complete", "todo_store.delete"] {
            assert_eq!(
                tools.call(op, &c, json!({"id": 2})).await,
                Err(ToolError::Failed(
                    "no todo with id 2 in namespace crud".into()
                )),
                "{op}"
            );
        }
        // Ids are never reused after a delete.
        let again = tools.add(&ctx("crud", "run-2", 1), "Eggs").await;
        assert_eq!(again.ok().map(|v| v["id"].clone()), Some(json!(13)));
        // A deleted, completed todo leaves no completed flag behind for anyone.
        let listed = tools
            .call("todo_store.list", &c, json!({}))
            .await
            .unwrap_or_default();
        assert!(
            listed
                .as_array()
                .is_some_and(|a| a.len() == 12 && a.iter().all(|t| t["completed"] == json!(false)))
        );
    }

    async fn idempotent_add(store: Arc<dyn TodoStore>) {
        let tools = Tools(todo_tools(store.clone()));
        let c = ctx("idem", "run-9", 4);
        let first = tools.add(&c, "Once").await;
        let retried = tools.add(&retry(&c), "Once").await;
        assert_eq!(
            first,
            Ok(json!({"id": 1, "title": "Once", "completed": false}))
        );
        assert_eq!(retried, first);
        assert_eq!(store.list("idem").await.ok().map(|l| l.len()), Some(1));
        // Another step or another run is a different key.
        let other_step = tools.add(&ctx("idem", "run-9", 5), "Once").await;
        let other_run = tools.add(&ctx("idem", "run-10", 4), "Once").await;
        assert_eq!(other_step.ok().map(|v| v["id"].clone()), Some(json!(2)));
        assert_eq!(other_run.ok().map(|v| v["id"].clone()), Some(json!(3)));
        // A replay returns the todo as first created, even after it changed or was deleted.
        let _ = store.complete("idem", 1).await;
        assert_eq!(tools.add(&c, "Once").await, first);
        let _ = store.delete("idem", 1).await;
        assert_eq!(tools.add(&c, "Once").await, first);
        assert_eq!(store.list("idem").await.ok().map(|l| l.len()), Some(2));
        // The same key in another namespace is independent.
        let elsewhere = store.add("idem-2", "run-9/4", "Once").await.ok();
        assert_eq!(elsewhere.map(|t| t.id), Some(1));
        // Keys with separators and braces do not collide with each other.
        let a = store.add("idem-3", "a:b/1", "x").await.ok().map(|t| t.id);
        let b = store.add("idem-3", "a/b:1", "y").await.ok().map(|t| t.id);
        let c2 = store.add("idem-3", "{a}", "z").await.ok().map(|t| t.id);
        assert_eq!((a, b, c2), (Some(1), Some(2), Some(3)));
    }

    async fn namespace_isolation(store: Arc<dyn TodoStore>) {
        let _ = store.add("team-a", "k", "secret of team-a").await;
        for ns in HOSTILE_NAMESPACES {
            assert_eq!(
                store.list(ns).await.ok(),
                Some(vec![]),
                "{ns:?} sees other todos"
            );
            assert_eq!(store.get(ns, 1).await.ok(), Some(None), "{ns:?}");
            assert_eq!(store.delete(ns, 1).await.ok(), Some(None), "{ns:?}");
            let added = store.add(ns, "k", ns).await.ok();
            assert_eq!(
                added,
                Some(Todo {
                    id: 1,
                    title: (*ns).to_owned(),
                    completed: false
                }),
                "{ns:?}"
            );
        }
        for ns in HOSTILE_NAMESPACES {
            let listed = store.list(ns).await.ok();
            assert_eq!(
                listed,
                Some(vec![Todo {
                    id: 1,
                    title: (*ns).to_owned(),
                    completed: false
                }]),
                "{ns:?}"
            );
        }
        let team_a = store.list("team-a").await.ok();
        assert_eq!(
            team_a,
            Some(vec![Todo {
                id: 1,
                title: "secret of team-a".into(),
                completed: false
            }])
        );
        // Unescaped, this namespace's `items` key would be team-a's idempotency record for
        // the key `k}:items`; with escaping the two never meet.
        let crafted = store
            .add("team-a}:idem:k", "x", "crafted")
            .await
            .ok()
            .map(|t| t.id);
        assert_eq!(crafted, Some(1));
        let victim = store.add("team-a", "k}:items", "victim").await.ok();
        assert_eq!(
            victim,
            Some(Todo {
                id: 2,
                title: "victim".into(),
                completed: false
            })
        );
        // The tool reports the namespace it looked in.
        let tools = Tools(todo_tools(store.clone()));
        assert_eq!(
            tools
                .call("todo_store.get", &ctx("team-a", "r", 1), json!({"id": 7}))
                .await,
            Err(ToolError::Failed(
                "no todo with id 7 in namespace team-a".into()
            ))
        );
        // Empty and oversized namespaces are refused, never mapped onto another one.
        for ns in [String::new(), "n".repeat(MAX_NAMESPACE_BYTES + 1)] {
            assert!(matches!(
                store.list(&ns).await,
                Err(StoreError::InvalidNamespace(_))
            ));
            let r = tools
                .call("todo_store.list", &ctx(&ns, "r", 1), json!({}))
                .await;
            assert!(matches!(r, Err(ToolError::Failed(_))), "{r:?}");
        }
    }

    async fn hostile_titles(store: Arc<dyn TodoStore>) {
        let tools = Tools(todo_tools(store.clone()));
        let limit = "é".repeat(MAX_TITLE_CHARS);
        let kept = [
            "Milch kaufen 🥛 — ünïcödé",
            "\"quoted\" 'single' `back`",
            "{step_1_output}",
            "{step_1_output.id} and {{braces}}",
            "12:title:with:colons",
            "line\nbreak\ttab\r\0nul",
            "'; DROP TABLE todos; --",
            "return redis.call('FLUSHALL')",
            "%7B%7D",
            limit.as_str(),
        ];
        for (i, title) in kept.iter().enumerate() {
            let step = u32::try_from(i).unwrap_or(0) + 1;
            let added = tools.add(&ctx("titles", "r", step), title).await;
            let id = added.as_ref().ok().map(|v| v["id"].clone());
            assert_eq!(
                added.as_ref().ok().map(|v| v["title"].clone()),
                Some(json!(title)),
                "{title:?}"
            );
            let got = tools
                .call(
                    "todo_store.get",
                    &ctx("titles", "r", step),
                    json!({ "id": id }),
                )
                .await;
            assert_eq!(
                got.ok().map(|v| v["title"].clone()),
                Some(json!(title)),
                "{title:?}"
            );
            // Replaying the idempotent add returns the exact bytes too.
            let replay = tools.add(&ctx("titles", "r", step), title).await;
            assert_eq!(replay, added, "{title:?}");
        }
        let too_long = "x".repeat(10_000);
        let over_by_one = "é".repeat(MAX_TITLE_CHARS + 1);
        for bad in [
            json!(""),
            json!("   \n\t"),
            json!(too_long),
            json!(over_by_one),
            json!(5),
            json!(null),
            json!(["t"]),
        ] {
            let r = tools
                .call(
                    "todo_store.add",
                    &ctx("titles", "r", 99),
                    json!({ "title": bad }),
                )
                .await;
            assert!(
                matches!(&r, Err(ToolError::InvalidInput(m)) if m.contains("/title")),
                "{bad}: {r:?}"
            );
        }
        assert_eq!(
            store.list("titles").await.ok().map(|l| l.len()),
            Some(kept.len())
        );
    }

    async fn hostile_inputs(store: Arc<dyn TodoStore>) {
        let tools = Tools(todo_tools(store));
        let c = ctx("inputs", "r", 1);
        for op in ["todo_store.get", "todo_store.complete", "todo_store.delete"] {
            for bad in [
                json!({"id": 0}),
                json!({"id": -1}),
                json!({"id": 1.5}),
                json!({"id": "1"}),
                json!({"id": null}),
                json!({"id": 1e300}),
                json!({}),
                json!({"id": 1, "title": "x"}),
                json!([1]),
                json!("id"),
            ] {
                let r = tools.call(op, &c, bad.clone()).await;
                assert!(
                    matches!(r, Err(ToolError::InvalidInput(_))),
                    "{op} {bad}: {r:?}"
                );
            }
            let r = tools.call(op, &c, json!({"id": u64::MAX})).await;
            assert_eq!(
                r,
                Err(ToolError::Failed(format!(
                    "no todo with id {} in namespace inputs",
                    u64::MAX
                )))
            );
        }
        assert!(matches!(
            tools.call("todo_store.list", &c, json!({"x": 1})).await,
            Err(ToolError::InvalidInput(_))
        ));
        assert!(matches!(
            tools
                .call("todo_store.add", &c, json!({"title": "a", "id": 1}))
                .await,
            Err(ToolError::InvalidInput(_))
        ));
    }

    /// The same (run, step) as `c`, on a later attempt.
    fn retry(c: &ToolContext) -> ToolContext {
        ToolContext {
            attempt: c.attempt + 1,
            ..c.clone()
        }
    }

    #[tokio::test]
    async fn memory_backend_passes_the_suite() {
        suite(Arc::new(MemoryTodoStore::new())).await;
    }

    #[tokio::test]
    async fn redis_backend_passes_the_suite() {
        let server = RedisServer::start().expect("redis-server starts");
        suite(redis_store(&server).await).await;
    }

    #[tokio::test]
    async fn redis_keys_stay_inside_the_namespace_hash_tag() {
        let server = RedisServer::start().expect("redis-server starts");
        let store = redis_store(&server).await;
        for ns in HOSTILE_NAMESPACES.iter().chain(&["team-a"]) {
            let _ = store.add(ns, "run/1", "t").await;
            let _ = store.complete(ns, 1).await;
        }
        let client = redis::Client::open(server.url()).expect("client");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut conn)
            .await
            .expect("keys");
        assert_eq!(keys.len(), (HOSTILE_NAMESPACES.len() + 1) * 4, "{keys:?}");
        let mut tags = std::collections::HashSet::new();
        for key in &keys {
            // Exactly one `{todo:...}` tag after the namespace prefix, free of `:` and braces.
            let rest = key
                .strip_prefix("crane:ns:")
                .and_then(|k| k.split_once(":{todo:"))
                .map(|(_, rest)| rest)
                .unwrap_or_else(|| panic!("bad prefix: {key}"));
            let (tag, _) = rest
                .split_once('}')
                .unwrap_or_else(|| panic!("no tag end: {key}"));
            assert!(!tag.is_empty() && !tag.contains([':', '{', '}']), "{key}");
            tags.insert(tag.to_owned());
        }
        assert_eq!(
            tags.len(),
            HOSTILE_NAMESPACES.len() + 1,
            "two namespaces share a tag: {tags:?}"
        );
        let ttl: i64 = redis::cmd("TTL")
            .arg("crane:ns:team-a:{todo:team-a}:idem:run/1")
            .query_async(&mut conn)
            .await
            .expect("ttl");
        assert!(ttl > 0 && ttl <= 7 * 24 * 3600, "ttl {ttl}");
    }

    #[tokio::test]
    async fn redis_down_is_transient() {
        let mut server = RedisServer::start().expect("redis-server starts");
        // Few, short reconnect attempts: the outcome is the same, the test is just quicker.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_max_delay(std::time::Duration::from_millis(50));
        let client = redis::Client::open(server.url()).expect("client");
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .expect("connect");
        let store: Arc<dyn TodoStore> = Arc::new(RedisTodoStore::new(conn));
        assert!(store.list("down").await.is_ok());
        server.kill();
        let tools = Tools(todo_tools(store));
        let r = tools
            .call("todo_store.list", &ctx("down", "r", 1), json!({}))
            .await;
        assert!(matches!(&r, Err(e) if e.is_retryable()), "{r:?}");
        let r = tools.add(&ctx("down", "r", 1), "x").await;
        assert!(matches!(&r, Err(ToolError::Transient(_))), "{r:?}");
    }

    #[tokio::test]
    async fn redis_todos_and_idempotency_survive_a_restart_with_aof() {
        let mut server = RedisServer::builder()
            .aof(true)
            .start()
            .expect("redis-server starts");
        let store = redis_store(&server).await;
        let first = store.add("team-a", "run/1", "Persist me").await.ok();
        server.restart().expect("restart");
        // The connection manager reconnects by itself; the first call may see the drop.
        let mut listed = store.list("team-a").await;
        if listed.is_err() {
            listed = store.list("team-a").await;
        }
        assert_eq!(listed.ok(), first.clone().map(|t| vec![t]));
        assert_eq!(store.add("team-a", "run/1", "Persist me").await.ok(), first);
        assert_eq!(
            store
                .add("team-a", "run/2", "Next")
                .await
                .ok()
                .map(|t| t.id),
            Some(2)
        );
    }

    #[test]
    fn escaping_is_injective_on_tricky_pairs() {
        assert_ne!(escape_namespace("a%7D"), escape_namespace("a}"));
        assert_ne!(escape_namespace("a:"), escape_namespace("a%3A"));
        assert_eq!(escape_namespace("team-a.b_c"), "team-a.b_c");
        assert_eq!(escape_namespace("{x}"), "%7Bx%7D");
    }

    #[test]
    fn one_tool_per_operation() {
        let tools = todo_tools(Arc::new(MemoryTodoStore::new()));
        let names: Vec<_> = tools.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            [
                "todo_store.add",
                "todo_store.list",
                "todo_store.get",
                "todo_store.complete",
                "todo_store.delete"
            ]
        );
    }
}
