//! Shared by the `tests/deploy_*.rs` tests, which check the artifacts in
//! deploy/ with the real tools: where the files are, finding those tools,
//! running them with a deadline, and reading YAML.
//!
//! A missing tool fails the test in CI (`CI=true`), where
//! scripts/install-deps.sh has installed it; on a developer's machine the test
//! says on stderr that it skipped, and passes.

#![allow(dead_code)]

use std::env;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A path under deploy/.
pub fn deploy(relative: &str) -> PathBuf {
    repo().join("deploy").join(relative)
}

/// The `poolside` binary cargo built for these tests.
pub fn poolside_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_poolside"))
}

fn in_ci() -> bool {
    matches!(env::var("CI").as_deref(), Ok("true") | Ok("1"))
}

/// `name` when it is on PATH. Otherwise panics in CI, or tells stderr the
/// test is skipped and returns `None`; `package` says where it comes from.
pub fn tool(name: &str, package: &str) -> Option<PathBuf> {
    match find_on_path(name) {
        Some(path) => Some(path),
        None => skip_or_fail(&format!(
            "`{name}` is not installed (from {package}; scripts/install-deps.sh installs it)"
        )),
    }
}

/// Panics with `why` in CI; elsewhere reports a skip and returns `None`.
pub fn skip_or_fail<T>(why: &str) -> Option<T> {
    assert!(!in_ci(), "{why}");
    skip(why);
    None
}

/// Reports on stderr, past the test harness's capture, that a test is skipped.
pub fn skip(why: &str) {
    let test = thread::current().name().unwrap_or("test").to_string();
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// `name` as found on PATH, if it is there.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// What a finished command printed, and how it exited.
pub struct Ran {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub what: String,
}

impl Ran {
    /// Panics, showing both outputs, unless the command exited 0.
    pub fn assert_success(&self) -> &Ran {
        assert!(
            self.status.success(),
            "{} failed ({}):\n{}",
            self.what,
            self.status,
            self.both()
        );
        self
    }

    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// stdout then stderr, for failure messages.
    pub fn both(&self) -> String {
        format!("--- stdout\n{}--- stderr\n{}", self.stdout, self.stderr)
    }
}

/// Runs `command` to completion; kills it and panics past `timeout`.
/// Output goes to unnamed temporary files, so no pipe can fill and block it.
pub fn run(command: &mut Command, timeout: Duration) -> Ran {
    let what = format!("{command:?}");
    let mut stdout = tempfile::tempfile().expect("temporary file");
    let mut stderr = tempfile::tempfile().expect("temporary file");
    command
        .stdin(std::process::Stdio::null())
        .stdout(stdout.try_clone().expect("clone file handle"))
        .stderr(stderr.try_clone().expect("clone file handle"));
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} still running after {timeout:?}; killed");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Ran {
        status,
        stdout: read_back(&mut stdout),
        stderr: read_back(&mut stderr),
        what,
    }
}

fn read_back(file: &mut File) -> String {
    let mut text = String::new();
    file.rewind().expect("rewind output file");
    file.read_to_string(&mut text).expect("read output file");
    text
}

/// Every document of a YAML stream, as JSON values; empty documents dropped.
pub fn yaml_documents(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("invalid YAML: {e}\n{text}")))
        .filter(|doc| !doc.is_null())
        .collect()
}

/// A one-document YAML file, as a JSON value.
pub fn yaml_file(path: &Path) -> Value {
    let text = read(path);
    let mut docs = yaml_documents(&text);
    assert_eq!(
        docs.len(),
        1,
        "{} should hold one YAML document",
        path.display()
    );
    docs.remove(0)
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Every `poolside_*` identifier in a PromQL expression (or a Grafana
/// `label_values(...)` query), in order of appearance, duplicates kept.
pub fn poolside_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut chars = expr.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if !(c.is_ascii_alphabetic() || c == '_' || c == ':') {
            continue;
        }
        let mut end = start + c.len_utf8();
        while let Some(&(i, next)) = chars.peek() {
            if !(next.is_ascii_alphanumeric() || next == '_' || next == ':') {
                break;
            }
            end = i + next.len_utf8();
            chars.next();
        }
        let word = &expr[start..end];
        if word.starts_with("poolside_") {
            names.push(word.to_string());
        }
    }
    names
}
