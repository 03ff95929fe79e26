//! A programmable fake resource service (API.md section 2): serves any number of named
//! resources at `POST /{name}/{try|confirm|cancel}`, records every call and answers from a
//! per-(resource, op) script: a queue of one-shot behaviours, then a default.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::api::{Api, resource_body};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Try,
    Confirm,
    Cancel,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Try => "try",
            Op::Confirm => "confirm",
            Op::Cancel => "cancel",
        }
    }

    pub fn parse(s: &str) -> Option<Op> {
        match s {
            "try" => Some(Op::Try),
            "confirm" => Some(Op::Confirm),
            "cancel" => Some(Op::Cancel),
            _ => None,
        }
    }
}

/// How the fake answers one call.
#[derive(Clone)]
pub enum Behaviour {
    /// 200 with this JSON body.
    Ok(Value),
    /// 200 with `{"resource", "op", "branch_id"}` (the default).
    Echo,
    /// 409 (a refused Try).
    Refuse,
    /// This status with an error body.
    Status(u16),
    /// This status with this non-JSON (or empty) body, as `text/plain`.
    Text(u16, String),
    /// Sleep, then 200 (with a coordinator request timeout below it: an unknown outcome).
    Hang(Duration),
    /// Wait until the barrier's N calls have all arrived, then 200. If they do not all arrive
    /// within 20 s, answer 503 and count a barrier timeout (see [`FakeResources::barrier_timeouts`]).
    Barrier(Arc<CallBarrier>),
}

/// Makes N concurrent calls wait until all N have arrived, then releases them together.
pub struct CallBarrier {
    n: usize,
    arrived: Mutex<usize>,
    open: watch::Sender<bool>,
}

impl CallBarrier {
    pub fn new(n: usize) -> Arc<CallBarrier> {
        Arc::new(CallBarrier {
            n,
            arrived: Mutex::new(0),
            open: watch::channel(false).0,
        })
    }

    /// Returns false if the barrier did not open within `max`.
    pub async fn wait(&self, max: Duration) -> bool {
        let mut rx = self.open.subscribe();
        {
            let mut arrived = self.arrived.lock().unwrap();
            *arrived += 1;
            if *arrived >= self.n {
                self.open.send_replace(true);
            }
        }
        tokio::time::timeout(max, rx.wait_for(|open| *open))
            .await
            .is_ok()
    }

    pub fn arrived(&self) -> usize {
        *self.arrived.lock().unwrap()
    }
}

/// One call received by the fake.
#[derive(Clone, Debug)]
pub struct Call {
    pub resource: String,
    pub op: Op,
    /// Header `X-Tcc-Gid`.
    pub gid_header: Option<String>,
    /// Header `X-Tcc-Branch-Id`.
    pub branch_id_header: Option<String>,
    /// Header `X-Tcc-Op`.
    pub op_header: Option<String>,
    /// Body `gid` (or the header when the body has none).
    pub gid: String,
    /// Body `branch_id` (or the header when the body has none).
    pub branch_id: String,
    /// Body `op`.
    pub body_op: Option<String>,
    /// Body `payload`.
    pub payload: Value,
    /// The whole body.
    pub body: Value,
}

#[derive(Default)]
struct Script {
    queue: VecDeque<Behaviour>,
    default: Option<Behaviour>,
}

#[derive(Default)]
struct Inner {
    calls: Vec<Call>,
    scripts: HashMap<(String, Op), Script>,
    barrier_timeouts: usize,
    hooks: Vec<(String, Value)>,
}

#[derive(Default)]
struct State {
    inner: Mutex<Inner>,
}

/// The fake resource services of one test (one HTTP server, many resource names).
pub struct FakeResources {
    state: Arc<State>,
    pub addr: SocketAddr,
    handle: actix_web::dev::ServerHandle,
}

impl FakeResources {
    /// Starts the server on its own thread and actix system, on a free port.
    pub fn start() -> FakeResources {
        let state = Arc::new(State::default());
        let data = web::Data::new(state.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let system = actix_web::rt::System::new();
            system.block_on(async move {
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .app_data(web::PayloadConfig::new(4 * 1024 * 1024))
                        .route("/hooks/{name}", web::post().to(hook))
                        .route("/{name}/{op}", web::post().to(handle))
                })
                .workers(2)
                .disable_signals()
                .shutdown_timeout(1)
                .bind(("127.0.0.1", 0))
                .expect("bind fake resource server");
                let addr = server.addrs()[0];
                let server = server.run();
                tx.send((addr, server.handle())).unwrap();
                let _ = server.await;
            });
        });
        let (addr, handle) = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("fake resource server did not start");
        FakeResources {
            state,
            addr,
            handle,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `(try_url, confirm_url, cancel_url)` of resource `name`.
    pub fn urls(&self, name: &str) -> (String, String, String) {
        let base = self.base_url();
        (
            format!("{base}/{name}/try"),
            format!("{base}/{name}/confirm"),
            format!("{base}/{name}/cancel"),
        )
    }

    /// The registration body of resource `name`.
    pub fn registration(&self, name: &str) -> Value {
        let (t, c, x) = self.urls(name);
        resource_body(&t, &c, &x)
    }

    /// `PUT /v1/resources/{name}` with this fake's URLs; expects 201 or 200.
    pub async fn register(&self, api: &Api, name: &str) {
        let (code, body) = api.put_resource(name, self.registration(name)).await;
        assert!(
            code == 201 || code == 200,
            "registering {name}: {code} {body:#}"
        );
    }

    /// Queues one-shot behaviours for `(resource, op)`, consumed in order.
    pub fn push(&self, resource: &str, op: Op, behaviours: impl IntoIterator<Item = Behaviour>) {
        let mut inner = self.state.inner.lock().unwrap();
        let script = inner.scripts.entry((resource.to_string(), op)).or_default();
        script.queue.extend(behaviours);
    }

    /// Sets the behaviour used once the queue of `(resource, op)` is empty.
    pub fn set_default(&self, resource: &str, op: Op, behaviour: Behaviour) {
        let mut inner = self.state.inner.lock().unwrap();
        let script = inner.scripts.entry((resource.to_string(), op)).or_default();
        script.default = Some(behaviour);
    }

    /// Every call received so far, in arrival order.
    pub fn all_calls(&self) -> Vec<Call> {
        self.state.inner.lock().unwrap().calls.clone()
    }

    /// Calls of `op` on `resource`.
    pub fn calls(&self, resource: &str, op: Op) -> Vec<Call> {
        self.all_calls()
            .into_iter()
            .filter(|c| c.resource == resource && c.op == op)
            .collect()
    }

    /// Calls of `op` on `resource` for transaction `gid`.
    pub fn calls_for(&self, resource: &str, op: Op, gid: &str) -> Vec<Call> {
        self.calls(resource, op)
            .into_iter()
            .filter(|c| c.gid == gid)
            .collect()
    }

    pub fn count(&self, resource: &str, op: Op) -> usize {
        self.calls(resource, op).len()
    }

    pub fn count_for(&self, resource: &str, op: Op, gid: &str) -> usize {
        self.calls_for(resource, op, gid).len()
    }

    /// Calls of `op` on any resource for transaction `gid`.
    pub fn count_op_for_gid(&self, op: Op, gid: &str) -> usize {
        self.all_calls()
            .iter()
            .filter(|c| c.op == op && c.gid == gid)
            .count()
    }

    /// Calls of `op` on any resource for any transaction.
    pub fn count_op(&self, op: Op) -> usize {
        self.all_calls().iter().filter(|c| c.op == op).count()
    }

    /// A URL that records every JSON POST it gets (for webhooks); see [`FakeResources::hooks`].
    pub fn hook_url(&self, name: &str) -> String {
        format!("{}/hooks/{name}", self.base_url())
    }

    /// The bodies POSTed to [`FakeResources::hook_url`] `name`.
    pub fn hooks(&self, name: &str) -> Vec<Value> {
        let inner = self.state.inner.lock().unwrap();
        inner
            .hooks
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// How many barrier waits gave up because not all of their calls arrived.
    pub fn barrier_timeouts(&self) -> usize {
        self.state.inner.lock().unwrap().barrier_timeouts
    }

    /// A readable list of the calls for a transaction, for assertion messages.
    pub fn describe(&self, gid: &str) -> String {
        self.all_calls()
            .iter()
            .filter(|c| c.gid == gid)
            .map(|c| format!("{} {} {}", c.resource, c.op.as_str(), c.branch_id))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Drop for FakeResources {
    fn drop(&mut self) {
        // Sends the stop command at once; the server thread ends by itself.
        drop(self.handle.stop(false));
    }
}

async fn hook(
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<Arc<State>>,
) -> HttpResponse {
    let body: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let mut inner = state.inner.lock().unwrap();
    inner.hooks.push((path.into_inner(), body));
    HttpResponse::Ok().json(json!({}))
}

fn header(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn handle(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    state: web::Data<Arc<State>>,
) -> HttpResponse {
    let (resource, op) = path.into_inner();
    let Some(op) = Op::parse(&op) else {
        return HttpResponse::NotFound()
            .json(json!({"error": {"code": "not_found", "message": "no such op"}}));
    };
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let gid_header = header(&req, "x-tcc-gid");
    let branch_id_header = header(&req, "x-tcc-branch-id");
    let call = Call {
        resource: resource.clone(),
        op,
        gid: body["gid"]
            .as_str()
            .map(str::to_string)
            .or_else(|| gid_header.clone())
            .unwrap_or_default(),
        branch_id: body["branch_id"]
            .as_str()
            .map(str::to_string)
            .or_else(|| branch_id_header.clone())
            .unwrap_or_default(),
        body_op: body["op"].as_str().map(str::to_string),
        payload: body["payload"].clone(),
        gid_header,
        branch_id_header,
        op_header: header(&req, "x-tcc-op"),
        body: body.clone(),
    };
    let behaviour = {
        let mut inner = state.inner.lock().unwrap();
        inner.calls.push(call.clone());
        let script = inner.scripts.entry((resource.clone(), op)).or_default();
        script
            .queue
            .pop_front()
            .or_else(|| script.default.clone())
            .unwrap_or(Behaviour::Echo)
    };
    let echo = || json!({"resource": resource, "op": op.as_str(), "branch_id": call.branch_id});
    match behaviour {
        Behaviour::Ok(v) => HttpResponse::Ok().json(v),
        Behaviour::Echo => HttpResponse::Ok().json(echo()),
        Behaviour::Refuse => HttpResponse::Conflict()
            .json(json!({"error": {"code": "refused", "message": "refused by the fake resource"}})),
        Behaviour::Status(s) => {
            HttpResponse::build(actix_web::http::StatusCode::from_u16(s).expect("status"))
                .json(json!({"error": {"code": "fake", "message": format!("fake status {s}")}}))
        }
        Behaviour::Text(s, text) => {
            HttpResponse::build(actix_web::http::StatusCode::from_u16(s).expect("status"))
                .content_type("text/plain")
                .body(text)
        }
        Behaviour::Hang(d) => {
            tokio::time::sleep(d).await;
            HttpResponse::Ok().json(echo())
        }
        Behaviour::Barrier(b) => {
            if b.wait(Duration::from_secs(20)).await {
                HttpResponse::Ok().json(echo())
            } else {
                state.inner.lock().unwrap().barrier_timeouts += 1;
                HttpResponse::ServiceUnavailable()
                    .json(json!({"error": {"code": "fake", "message": "barrier timeout"}}))
            }
        }
    }
}
