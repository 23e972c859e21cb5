//! Hot-path micro-benchmarks: frame scanning, command classification and
//! reply splitting, so a regression shows up as a number.
//!
//! `cargo bench --bench hot_path`

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use poolside::command::{classify, counted_index};
use poolside::resp::write_command;
use poolside::resp::{CommandScanner, Limits, ReplyScanner};

fn pipeline(n: usize) -> Vec<u8> {
    let mut out = BytesMut::new();
    for i in 0..n {
        let key = format!("key:{i}");
        if i % 2 == 0 {
            let args = [
                &b"SET"[..],
                key.as_bytes(),
                b"some-value-of-moderate-length",
            ];
            write_command(&mut out, args.into_iter());
        } else {
            write_command(&mut out, [&b"GET"[..], key.as_bytes()].into_iter());
        }
    }
    out.to_vec()
}

fn replies(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        match i % 4 {
            0 => out.extend_from_slice(b"+OK\r\n"),
            1 => out.extend_from_slice(b"$29\r\nsome-value-of-moderate-length\r\n"),
            2 => out.extend_from_slice(b":12345\r\n"),
            _ => out.extend_from_slice(b"*3\r\n$1\r\na\r\n$1\r\nb\r\n*1\r\n:1\r\n"),
        }
    }
    out
}

fn scan_commands(c: &mut Criterion) {
    let mut group = c.benchmark_group("scan_commands");
    for n in [1usize, 16, 1000] {
        let input = pipeline(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("pipeline_{n}"), |b| {
            let mut scanner = CommandScanner::new(Limits::default());
            b.iter(|| {
                let mut count = 0;
                while let Ok(Some(f)) = scanner.next_frame(black_box(&input)) {
                    count += f.argc();
                }
                scanner.consume(input.len());
                count
            })
        });
    }
    group.finish();
}

/// Times `f` over eight command names, as a client spells them.
fn over_names(c: &mut Criterion, id: &str, names: [&[u8]; 8], f: impl Fn(&[u8])) {
    c.bench_function(id, |b| {
        b.iter(|| {
            for name in names {
                f(black_box(name));
            }
        })
    });
}

fn classify_commands(c: &mut Criterion) {
    let names: [&[u8]; 8] = [
        b"GET",
        b"set",
        b"HGETALL",
        b"evalsha",
        b"BLPOP",
        b"client",
        b"MULTI",
        b"ZREMRANGEBYSCORE",
    ];
    over_names(c, "classify_8_names", names, |name| {
        black_box(classify(name, Some(b"SETNAME")));
    });
}

fn count_commands(c: &mut Criterion) {
    // Counted names, and one that is not counted.
    let names: [&[u8]; 8] = [
        b"GET",
        b"set",
        b"HGETALL",
        b"evalsha",
        b"BLPOP",
        b"expire",
        b"MULTI",
        b"NO-SUCH-COMMAND",
    ];
    over_names(c, "counted_index_8_names", names, |name| {
        black_box(counted_index(name));
    });
}

fn split_replies(c: &mut Criterion) {
    let mut group = c.benchmark_group("split_replies");
    for n in [16usize, 1000] {
        let input = replies(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("replies_{n}"), |b| {
            b.iter(|| {
                let mut scanner = ReplyScanner::default();
                let mut at = 0;
                while let Ok(Some(end)) = scanner.scan(black_box(&input), at) {
                    at = end;
                }
                at
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    scan_commands,
    classify_commands,
    count_commands,
    split_replies
);
criterion_main!(benches);
