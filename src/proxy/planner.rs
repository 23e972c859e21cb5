//! The planner (DESIGN.md hop 3): one client batch in, a [`Plan`] out. It
//! does no I/O: it classifies each command from the table, answers what
//! poolside answers itself (updating the client's state), applies the
//! policy, and lays out the bytes that go upstream.

use super::blocking;
use super::hello;
use super::local::{self, Answer, ClientState, ReplyMode};
use super::policy::{self, Policy};
use crate::backend::{Plan, Remote};
use crate::command::{allowed_before_auth, classify, Class, Local};
use crate::resp::{
    decimal, write_command, write_error, write_error_quoting, CommandScanner, Frame,
};
use crate::traffic::Traffic;

/// A client batch as the session read it: whole frames of `buf`.
pub struct Batch<'a> {
    pub buf: &'a [u8],
    pub scanner: &'a CommandScanner,
    pub frames: &'a [Frame],
}

/// Plans `batch` into `plan` (cleared first). Stops early at QUIT (the rest
/// is never run) or at a streaming command (the stream takes the rest).
/// One loop in command order, longer than most functions here: every arm's
/// `continue` or `return` is part of what the plan says.
pub fn plan(
    policy: &Policy,
    traffic: &Traffic,
    client: &mut ClientState,
    batch: &Batch<'_>,
    plan: &mut Plan,
) {
    plan.clear();
    let (buf, scanner) = (batch.buf, batch.scanner);
    let mut in_multi = client.pin.multi;
    // The protocol the batch's later commands run in: a HELLO earlier in the
    // same pipeline switches it before they reach Redis.
    let mut proto = client.wants.proto;
    client.answer_proto = proto;
    for f in batch.frames {
        if f.is_empty() {
            continue;
        }
        let name = scanner.arg(buf, f, 0).unwrap_or_default();
        let sub = scanner.arg(buf, f, 1);
        traffic.count_command(name);
        let class = classify(name, sub);
        // RESET and CLIENT REPLY ON are answered whatever the reply mode
        // (Redis clears it first); everything else follows it.
        let skipping = client.reply == ReplyMode::Skip;
        let silent = client.take_silence();
        let mode = scanner.arg(buf, f, 2);
        let answered = always_answered(class, f.argc(), mode, skipping, in_multi);
        plan.silence_next(silent && !answered);
        if answered_before_auth(client, name, sub, class, plan)
            || refused_by_policy(policy, traffic, client, in_multi, name, sub, plan)
        {
            continue;
        }
        let remote = match class {
            Class::Local(Local::Hello) => {
                let checked = plan.push_local_or(|out| hello::check(client, buf, scanner, f, out));
                if let Some(asked) = checked {
                    proto = asked.unwrap_or(proto);
                    client.answer_proto = proto;
                    plan.push_remote(Remote::Hello(asked), |up| write_hello(asked, up));
                }
                continue;
            }
            // In RESP3, invalidations arrive as push frames at any time: the
            // session streams both ways on the tracking connection.
            Class::PinSession if proto == 3 && is_tracking(sub) => {
                plan.stream_from = Some(f.start);
                plan.rest = Some(f.end);
                return;
            }
            // Redis queues these and runs them at EXEC, but poolside answers
            // them itself: they cannot be in the transaction. Refused as
            // Redis refuses a command it will not queue, which discards the
            // transaction at EXEC (QUIT and RESET run at once, as in Redis).
            Class::Local(l) if in_multi && !matches!(l, Local::Quit | Local::Reset) => {
                refuse_in_multi(client, plan, l.name());
                continue;
            }
            // Its reply is rewritten to describe the client (not the pooled
            // connection), which cannot be done inside EXEC's array.
            Class::ClientInfo if in_multi => {
                refuse_in_multi(client, plan, "CLIENT INFO");
                continue;
            }
            Class::Local(l) => {
                match plan.push_local(|out| client.answer(l, buf, scanner, f, out)) {
                    Answer::Close => {
                        plan.close = true;
                        return;
                    }
                    Answer::Reset => {
                        plan.reset = true;
                        plan.rest = Some(f.end);
                        return;
                    }
                    // Inside MULTI only QUIT and RESET get here, and a RESET
                    // that is done, not reset, was refused (its arity):
                    // that dooms the transaction, as in Redis.
                    Answer::Done => client.pin.doomed |= in_multi,
                }
                continue;
            }
            Class::Unsupported(msg) => {
                client.pin.doomed |= in_multi;
                plan.push_local(|out| write_error(out, &format!("ERR poolside: {msg}")));
                continue;
            }
            Class::Stream => {
                plan.stream_from = Some(f.start);
                plan.rest = Some(f.end);
                if name.eq_ignore_ascii_case(b"SSUBSCRIBE") {
                    // A cluster runs it on the owner of its channel's slot.
                    let channel = scanner.arg(buf, f, 1);
                    plan.stream_slot = channel.map(crate::cluster::slot::key_slot);
                }
                return;
            }
            Class::Blocking => {
                plan.wait = plan.wait.max(blocking::wait_of(scanner, buf, f));
                plan.may_block = true;
                plan.shareable = false;
                Remote::Plain
            }
            class => remote_kind(class, scanner, buf, f),
        };
        match remote {
            Remote::Multi if !in_multi => {
                in_multi = true;
                client.pin.doomed = false;
            }
            Remote::Exec | Remote::Discard => {
                in_multi = false;
                if std::mem::take(&mut client.pin.doomed) && remote == Remote::Exec {
                    plan.push_exec_aborted();
                    continue;
                }
            }
            _ => {}
        }
        if runs_code(name) {
            // A script or function may return an error with any code after
            // its writes ran: never re-sent, whatever its reply says.
            plan.resendable = false;
        }
        plan.push_remote(remote, |up| scanner.write_frame(buf, f, up));
    }
}

/// A command poolside answers (or rewrites the answer of) itself, inside
/// MULTI: Redis would queue it, but upstream it could not be this client's.
/// Refused as Redis refuses a command it will not queue, which dooms the
/// transaction (its EXEC becomes EXECABORT).
fn refuse_in_multi(client: &mut ClientState, plan: &mut Plan, name: &str) {
    client.pin.doomed = true;
    plan.push_local(|out| {
        let text = [
            &b"ERR Command not allowed inside a transaction (poolside answers "[..],
            name.as_bytes(),
            b" itself)",
        ];
        write_error_quoting(out, &text);
    });
}

/// EVAL, EVALSHA, FCALL and their read-only forms run user code.
fn runs_code(name: &[u8]) -> bool {
    const CODE: [&[u8]; 6] = [
        b"EVAL",
        b"EVALSHA",
        b"EVAL_RO",
        b"EVALSHA_RO",
        b"FCALL",
        b"FCALL_RO",
    ];
    CODE.iter().any(|c| c.eq_ignore_ascii_case(name))
}

/// A client that has not authenticated gets PONG for PING and NOAUTH for
/// anything but AUTH, HELLO and QUIT, all answered here.
fn answered_before_auth(
    client: &ClientState,
    name: &[u8],
    sub: Option<&[u8]>,
    class: Class,
    plan: &mut Plan,
) -> bool {
    if client.authenticated {
        return false;
    }
    if name.eq_ignore_ascii_case(b"PING") {
        plan.push_local(|out| local::write_pong(out, sub));
        return true;
    }
    if !allowed_before_auth(class) {
        plan.push_local(|out| write_error(out, "NOAUTH Authentication required."));
        return true;
    }
    false
}

/// A command on the deny-list is answered with the policy's error; inside
/// MULTI it also dooms the transaction (its EXEC becomes EXECABORT).
fn refused_by_policy(
    policy: &Policy,
    traffic: &Traffic,
    client: &mut ClientState,
    in_multi: bool,
    name: &[u8],
    sub: Option<&[u8]>,
    plan: &mut Plan,
) -> bool {
    let Some(shown) = policy.denied(name, sub) else {
        return false;
    };
    traffic.command_denied();
    client.pin.doomed |= in_multi;
    plan.push_local(|out| policy::write_refusal(out, shown));
    true
}

/// `HELLO [proto]` as poolside sends it upstream: no AUTH, no SETNAME.
fn write_hello(proto: Option<u8>, up: &mut bytes::BytesMut) {
    let mut digits = [0; 20];
    match proto {
        Some(p) => write_command(
            up,
            [&b"HELLO"[..], decimal(u64::from(p), &mut digits)].into_iter(),
        ),
        None => write_command(up, [&b"HELLO"[..]].into_iter()),
    }
}

/// Answered even under CLIENT REPLY OFF: RESET and CLIENT REPLY ON, which
/// clear it before they answer; under SKIP only CLIENT REPLY ON (Redis'
/// RESET clears what is set for the commands after it, not the skip of its
/// own reply). Not with the wrong number of arguments: Redis refuses those
/// before running them, and the refusal is a reply like any other; nor
/// CLIENT REPLY ON inside MULTI, which is refused there, not run.
fn always_answered(
    class: Class,
    argc: usize,
    mode: Option<&[u8]>,
    skipping: bool,
    in_multi: bool,
) -> bool {
    match class {
        Class::Local(Local::Reset) => argc == 1 && !skipping,
        Class::Local(Local::ClientReply) => {
            !in_multi && argc == 3 && mode.is_some_and(|m| m.eq_ignore_ascii_case(b"ON"))
        }
        _ => false,
    }
}

fn is_tracking(sub: Option<&[u8]>) -> bool {
    sub.is_some_and(|s| s.eq_ignore_ascii_case(b"TRACKING"))
}

/// What the reply to a forwarded command means to the client's state.
fn remote_kind(class: Class, scanner: &CommandScanner, buf: &[u8], f: &Frame) -> Remote {
    match class {
        Class::Select => Remote::Select(
            scanner
                .arg(buf, f, 1)
                .filter(|_| f.argc() == 2)
                .and_then(|a| std::str::from_utf8(a).ok())
                .and_then(|a| a.parse().ok()),
        ),
        Class::Multi => Remote::Multi,
        Class::Exec => Remote::Exec,
        Class::Discard => Remote::Discard,
        Class::Watch => Remote::Watch,
        Class::Unwatch => Remote::Unwatch,
        Class::PinSession => Remote::PinSession,
        Class::Dirty => Remote::Dirty,
        Class::ClientInfo => Remote::ClientInfo,
        _ => Remote::Plain,
    }
}

#[cfg(test)]
#[path = "planner_tests.rs"]
mod tests;
