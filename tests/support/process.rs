//! The real `tccd` binary as a child process: any subcommand, free port, stdout/stderr drained
//! in the background (the last lines are printed when a test fails), kill and restart.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use super::api::Api;

/// How long a process may take to print `listening on http://ADDR` (migrations included).
pub const START_DEADLINE: Duration = Duration::from_secs(60);
const KEPT_LOG_LINES: usize = 400;

type Logs = Arc<Mutex<VecDeque<String>>>;

fn push_log(logs: &Logs, line: String) {
    let mut logs = logs.lock().unwrap();
    if logs.len() >= KEPT_LOG_LINES {
        logs.pop_front();
    }
    logs.push_back(line);
}

/// A running (or crashed) `tccd <subcommand>` process.
pub struct Process {
    subcommand: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    /// `host:port` from the `listening on` line of the current run.
    pub addr: String,
    logs: Logs,
    runs: usize,
}

impl Process {
    /// Starts `tccd <subcommand> <args...>` with `RUST_LOG=info` plus `env`, and waits for its
    /// `listening on http://ADDR` line. Blocking: call it from `spawn_blocking` in async code
    /// (see [`Process::start_async`]).
    pub fn start(subcommand: &str, args: &[String], env: &[(String, String)]) -> Process {
        let mut p = Process {
            subcommand: subcommand.to_string(),
            args: args.to_vec(),
            env: env.to_vec(),
            child: None,
            addr: String::new(),
            logs: Arc::new(Mutex::new(VecDeque::new())),
            runs: 0,
        };
        p.spawn();
        p
    }

    pub async fn start_async(
        subcommand: &str,
        args: Vec<String>,
        env: Vec<(String, String)>,
    ) -> Process {
        let subcommand = subcommand.to_string();
        blocking(move || Process::start(&subcommand, &args, &env)).await
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn spawn(&mut self) {
        self.runs += 1;
        push_log(
            &self.logs,
            format!("===== run {} of tccd {} =====", self.runs, self.subcommand),
        );
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tccd"));
        cmd.arg(&self.subcommand).args(&self.args);
        // Nothing from the test runner's environment may change the process under test.
        for (k, _) in std::env::vars() {
            if k.starts_with("TCCD_") || k == "FAILPOINTS" || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        cmd.env("RUST_LOG", "info");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start tccd {}: {e}", self.subcommand));

        let (tx, rx) = mpsc::channel::<String>();
        let stdout = child.stdout.take().unwrap();
        let logs = self.logs.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.trim().strip_prefix("listening on http://")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr.trim_end_matches('/').to_string());
                }
                push_log(&logs, format!("[stdout] {line}"));
            }
        });
        let stderr = child.stderr.take().unwrap();
        let logs = self.logs.clone();
        std::thread::spawn(move || drain_lines(stderr, &logs));
        self.child = Some(child);

        match rx.recv_timeout(START_DEADLINE) {
            Ok(addr) => self.addr = addr,
            Err(e) => {
                let status = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                self.kill();
                panic!(
                    "tccd {} {:?} did not print `listening on http://ADDR` ({e:?}, exit status {status:?}); \
                     last output:\n{}",
                    self.subcommand,
                    self.args,
                    self.logs()
                );
            }
        }
    }

    /// SIGKILLs the process (if still running) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the process and starts it again with the same arguments and environment.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Kills the process and starts it again with the same arguments and a new environment
    /// (for example without `FAILPOINTS`).
    pub fn restart_with_env(&mut self, env: &[(String, String)]) {
        self.kill();
        self.env = env.to_vec();
        self.spawn();
    }

    /// The OS process id of the current run.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Sends a signal (`"TERM"`, `"INT"`, ...) to the current run.
    pub fn signal(&self, sig: &str) {
        let pid = self.pid().expect("process is not running");
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} {pid} failed");
    }

    /// Waits (blocking) for the process to exit by itself, for example after a failpoint.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("process is not running");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "tccd {} did not exit within {timeout:?}; last output:\n{}",
                    self.subcommand,
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the current run has exited.
    pub fn has_exited(&mut self) -> bool {
        match self.child.as_mut() {
            None => true,
            Some(c) => c.try_wait().ok().flatten().is_some(),
        }
    }

    /// The last lines of stdout and stderr of every run.
    pub fn logs(&self) -> String {
        let logs = self.logs.lock().unwrap();
        logs.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

fn drain_lines(r: impl Read, logs: &Logs) {
    for line in BufReader::new(r).lines() {
        let Ok(line) = line else { break };
        push_log(logs, line);
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "----- last output of tccd {} {:?} -----\n{}\n----- end of tccd output -----",
                self.subcommand,
                self.args,
                self.logs()
            );
        }
    }
}

/// Runs blocking work off the async runtime, re-raising its panic as is.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// `tccd coordinator --bind 127.0.0.1:0 --database-url URL <args>` and a client of its API.
pub struct Coordinator {
    pub process: Option<Process>,
    pub api: Api,
    pub db_url: String,
}

impl Coordinator {
    pub async fn start(db_url: &str, args: &[&str], env: &[(&str, &str)]) -> Coordinator {
        let mut all = vec![
            "--bind".to_string(),
            "127.0.0.1:0".to_string(),
            "--database-url".to_string(),
            db_url.to_string(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let process = Process::start_async("coordinator", all, env).await;
        let api = Api::new(&process.base_url());
        Coordinator {
            process: Some(process),
            api,
            db_url: db_url.to_string(),
        }
    }

    fn process_mut(&mut self) -> &mut Process {
        self.process.as_mut().expect("coordinator process")
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        self.process_mut().kill();
    }

    /// SIGTERM (a clean stop); see [`Coordinator::wait_exit`].
    pub fn terminate(&self) {
        self.process
            .as_ref()
            .expect("coordinator process")
            .signal("TERM");
    }

    async fn with_process(&mut self, f: impl FnOnce(&mut Process) + Send + 'static) {
        let mut p = self.process.take().expect("coordinator process");
        let p = blocking(move || {
            f(&mut p);
            p
        })
        .await;
        self.api = Api::new(&p.base_url());
        self.process = Some(p);
    }

    /// Kills and starts again on the same database with the same flags and environment.
    pub async fn restart(&mut self) {
        self.with_process(|p| p.restart()).await;
    }

    /// Kills and starts again on the same database with a new environment.
    pub async fn restart_with_env(&mut self, env: &[(&str, &str)]) {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.with_process(move |p| p.restart_with_env(&env)).await;
    }

    /// Waits for the process to exit by itself (a failpoint); returns its exit status.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut p = self.process.take().expect("coordinator process");
        let (p, status) = blocking(move || {
            let s = p.wait_exit(timeout);
            (p, s)
        })
        .await;
        self.process = Some(p);
        status
    }

    pub fn logs(&self) -> String {
        self.process.as_ref().map(|p| p.logs()).unwrap_or_default()
    }
}

/// What a command that ran to its end printed. `status` is None when it outlived its deadline
/// (it was then killed, and a line saying so ends `stderr`).
pub struct Finished {
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

/// Runs `tccd ARGS` to its end, configured by its flags alone (the test's own `TCCD_*`,
/// `FAILPOINTS` and `NO_COLOR` are not passed on), killing it if it outlives `deadline`.
pub fn run_to_end(args: &[std::ffi::OsString], deadline: Duration) -> Finished {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tccd"));
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("TCCD_") || k == "FAILPOINTS" || k == "NO_COLOR" {
            cmd.env_remove(k);
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start tccd");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let until = Instant::now() + deadline;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for tccd") {
            break Some(status);
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = out.join().unwrap();
    let mut stderr = err.join().unwrap();
    if status.is_none() {
        stderr.push_str(&format!(
            "\n[test] tccd did not finish within {deadline:?} and was killed"
        ));
    }
    Finished {
        status,
        stdout,
        stderr,
    }
}
