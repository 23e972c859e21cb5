//! A batch's full submit-to-reply path: one client writes a pipelined batch
//! of `GET key` (1 or 16 commands) and reads until every reply arrived,
//! straight to a real `redis-server` (the baseline) and through poolside in
//! each pool mode, so poolside's cost per batch shows up as the difference.
//!
//! `cargo bench --bench round_trip` (needs `redis-server` on PATH;
//! scripts/install-deps.sh redis installs it)
//!
//! Poolside runs in-process on a current-thread tokio runtime of its own, on
//! a background thread: that is how it runs in production (worker_threads = 1,
//! src/app.rs), and it keeps the client's thread out of poolside's scheduler,
//! as with a separate client process. The client is a blocking
//! `std::net::TcpStream` on the bench thread, the same one for all three
//! targets, so its own cost is common to every number. Each target gets one
//! connection opened before measuring: the numbers are steady state, without
//! connecting.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use poolside::config::{Config, PoolMode};
use poolside::resp::{write_command, ReplyScanner};
use tokio::sync::oneshot;

const KEY: &[u8] = b"key";
/// The value GET returns: a real bulk string, not a nil.
const VALUE: &[u8] = b"some-value-of-moderate-length";
const BATCH_SIZES: [usize; 2] = [1, 16];
/// How long redis-server may take to answer its first PING.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// A reply that does not come in this time fails the bench instead of hanging it.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A `redis-server` child on a free loopback port without persistence,
/// killed on drop (tests/common/server.rs, cut down to what this bench needs).
struct RedisServer {
    child: Child,
    addr: SocketAddr,
}

impl RedisServer {
    fn start() -> RedisServer {
        // Another process may take the free port before the server binds it:
        // retry with a fresh port when the server exits early.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("bind 127.0.0.1:0")
                .port();
            let spawned = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            let child = match spawned {
                Ok(child) => child,
                Err(e) if e.kind() == ErrorKind::NotFound => panic!(
                    "redis-server not found on PATH: this bench needs a real one \
                     (scripts/install-deps.sh redis installs it)"
                ),
                Err(e) => panic!("cannot spawn redis-server: {e}"),
            };
            let mut server = RedisServer {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
            };
            if server.wait_ready() {
                return server;
            }
        }
        panic!("redis-server did not start after 5 attempts");
    }

    /// Polls with PING until it answers PONG; false if the child exited or
    /// the deadline passed.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(mut client) = Client::connect(self.addr) {
                if client.command(&[&b"PING"[..]]) == b"+PONG\r\n" {
                    return true;
                }
            }
            thread::sleep(Duration::from_millis(10));
        }
        false
    }

    fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poolside on its own current-thread runtime on a background thread; shut
/// down (drained, upstream connections closed) and joined on drop, which
/// must come before the Redis server's.
struct Poolside {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Poolside {
    fn start(redis: &RedisServer, mode: PoolMode) -> Poolside {
        let mut config = Config::for_tests(&redis.url());
        config.pool.mode = mode;
        let (addr_tx, addr_rx) = mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = thread::Builder::new()
            .name(format!("poolside-{mode:?}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime");
                runtime.block_on(async move {
                    let running = poolside::app::start(config).await.expect("poolside starts");
                    addr_tx.send(running.client_addr).expect("bench waits");
                    let _ = stopped.await;
                    running.shutdown().await;
                });
            })
            .expect("spawn poolside thread");
        let addr = addr_rx
            .recv()
            .expect("poolside started (its thread panicked otherwise)");
        Poolside {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Poolside {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One blocking client connection that reads replies by counting them.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    scanner: ReplyScanner,
}

impl Client {
    fn connect(addr: SocketAddr) -> std::io::Result<Client> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        Ok(Client {
            stream,
            buf: vec![0; 64 * 1024],
            scanner: ReplyScanner::default(),
        })
    }

    /// Writes `batch` (`n` commands) and reads until `n` complete replies
    /// arrived; returns how many bytes they took (in `self.buf`). Every
    /// reply must be a bulk string (the value of GET): an error reply
    /// panics rather than being timed as a fast answer.
    fn round_trip(&mut self, batch: &[u8], n: usize) -> usize {
        self.stream.write_all(batch).expect("write batch");
        let mut filled = 0;
        let mut at = 0;
        let mut replies = 0;
        while replies < n {
            match self.scanner.scan(&self.buf[..filled], at) {
                Ok(Some(end)) => {
                    if self.buf[at] != b'$' {
                        panic!(
                            "not a bulk string reply: {:?}",
                            String::from_utf8_lossy(&self.buf[at..end])
                        );
                    }
                    at = end;
                    replies += 1;
                }
                Ok(None) => {
                    assert!(filled < self.buf.len(), "replies overflow the read buffer");
                    let read = self
                        .stream
                        .read(&mut self.buf[filled..])
                        .expect("read replies");
                    assert!(read > 0, "connection closed with {replies}/{n} replies");
                    filled += read;
                }
                Err(e) => panic!("malformed reply: {e:?}"),
            }
        }
        assert_eq!(at, filled, "bytes past the batch's last reply");
        at
    }

    /// One command, outside the measurement; returns its reply's bytes.
    fn command(&mut self, args: &[&[u8]]) -> Vec<u8> {
        let mut out = BytesMut::new();
        write_command(&mut out, args.iter().copied());
        self.stream.write_all(&out).expect("write command");
        let mut filled = 0;
        loop {
            if let Ok(Some(end)) = self.scanner.scan(&self.buf[..filled], 0) {
                return self.buf[..end].to_vec();
            }
            let read = self
                .stream
                .read(&mut self.buf[filled..])
                .expect("read reply");
            assert!(read > 0, "connection closed before the reply");
            filled += read;
        }
    }
}

/// `n` pipelined `GET key` commands, RESP-encoded.
fn gets(n: usize) -> Vec<u8> {
    let mut out = BytesMut::new();
    for _ in 0..n {
        write_command(&mut out, [&b"GET"[..], KEY].into_iter());
    }
    out.to_vec()
}

/// The exact bytes of one GET reply, to check each target once before
/// measuring it.
fn get_reply() -> Vec<u8> {
    let mut reply = format!("${}\r\n", VALUE.len()).into_bytes();
    reply.extend_from_slice(VALUE);
    reply.extend_from_slice(b"\r\n");
    reply
}

fn bench_target(c: &mut Criterion, name: &str, addr: SocketAddr) {
    let mut client = Client::connect(addr).unwrap_or_else(|e| panic!("connect to {name}: {e}"));
    let expected = get_reply();
    let mut group = c.benchmark_group(format!("round_trip/{name}"));
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    for n in BATCH_SIZES {
        let batch = gets(n);
        let len = client.round_trip(&batch, n);
        assert_eq!(
            &client.buf[..len],
            expected.repeat(n).as_slice(),
            "{name}: the replies to {n} GETs"
        );
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("batch_{n}"), |b| {
            b.iter(|| client.round_trip(&batch, n))
        });
    }
    group.finish();
}

fn round_trip(c: &mut Criterion) {
    let redis = RedisServer::start();
    let mut setup = Client::connect(redis.addr).expect("connect to redis-server");
    assert_eq!(setup.command(&[b"SET", KEY, VALUE]), b"+OK\r\n");
    drop(setup);

    bench_target(c, "direct", redis.addr);
    for (name, mode) in [
        ("transaction", PoolMode::Transaction),
        ("multiplexed", PoolMode::Multiplexed),
    ] {
        let poolside = Poolside::start(&redis, mode);
        bench_target(c, name, poolside.addr);
        drop(poolside);
    }
    drop(redis);
}

criterion_group!(benches, round_trip);
criterion_main!(benches);
