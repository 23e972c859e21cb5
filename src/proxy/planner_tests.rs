//! The planner on its own: bytes and client state in, a plan out.

use std::sync::Arc;

use super::*;
use crate::backend::{Part, Pin};
use crate::config::Config;
use crate::proxy::Credentials;
use crate::resp::Limits;

struct Fixture {
    policy: Policy,
    traffic: Arc<Traffic>,
    client: ClientState,
    plan: Plan,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::with(|_| {})
    }

    fn with(tweak: impl FnOnce(&mut Config)) -> Fixture {
        let mut config = Config::for_tests("redis://127.0.0.1:1");
        tweak(&mut config);
        let traffic = Arc::new(Traffic::default());
        let credentials = Arc::new(Credentials::new(&config));
        Fixture {
            policy: Policy::new(&config.policy.deny_commands),
            client: ClientState::new(0, credentials, traffic.clone()),
            traffic,
            plan: Plan::default(),
        }
    }

    /// Plans `commands` (each a list of arguments) as one pipeline.
    fn plan(&mut self, commands: &[&[&str]]) -> &Plan {
        let mut buf = bytes::BytesMut::new();
        for args in commands {
            let args = args.iter().map(|a| a.as_bytes());
            crate::resp::write_command(&mut buf, args.collect::<Vec<_>>().into_iter());
        }
        let mut scanner = CommandScanner::new(Limits::default());
        let mut frames = Vec::new();
        while let Some(f) = scanner.next_frame(&buf).expect("valid RESP") {
            frames.push(f);
        }
        let batch = Batch {
            buf: &buf,
            scanner: &scanner,
            frames: &frames,
        };
        plan(
            &self.policy,
            &self.traffic,
            &mut self.client,
            &batch,
            &mut self.plan,
        );
        &self.plan
    }
}

/// The steps as `L:<answer>` for local ones and `R:<kind>` for upstream ones.
fn shape(plan: &Plan) -> Vec<String> {
    plan.parts(0)
        .map(|p| match p {
            Part::Local(a) => format!("L:{}", String::from_utf8_lossy(a).trim_end()),
            Part::Remote(r) => format!("R:{r:?}"),
            Part::Silent(r) => format!("S:{r:?}"),
        })
        .collect()
}

#[test]
fn plain_pipelines_are_shareable_and_keep_every_frame() {
    let mut f = Fixture::new();
    let plan = f.plan(&[&["SET", "k", "v"], &["GET", "k"]]);
    assert_eq!(shape(plan), ["R:Plain", "R:Plain"]);
    assert!(plan.shareable && !plan.may_block && !plan.close && plan.needs_upstream());
    assert_eq!(
        &plan.upstream[..],
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
    );
    assert_eq!(f.traffic.commands_total(), 2);
}

#[test]
fn local_answers_stay_in_place_and_make_the_batch_unshareable() {
    let mut f = Fixture::new();
    let plan = f.plan(&[&["GET", "a"], &["CLIENT", "SETNAME", "app"], &["GET", "b"]]);
    assert_eq!(shape(plan), ["R:Plain", "L:+OK", "R:Plain"]);
    assert!(!plan.shareable);
    assert_eq!(f.client.name.as_deref(), Some(&b"app"[..]));
}

#[test]
fn quit_mid_pipeline_closes_and_plans_nothing_after_it() {
    let mut f = Fixture::new();
    let plan = f.plan(&[&["GET", "a"], &["QUIT"], &["SET", "never", "run"]]);
    assert_eq!(shape(plan), ["R:Plain", "L:+OK"]);
    assert!(plan.close);
    assert_eq!(plan.remote_replies(), 1);
}

#[test]
fn denied_commands_are_refused_locally_and_counted() {
    let mut f = Fixture::with(|c| c.policy.deny_commands = vec!["FLUSHALL".into()]);
    let plan = f.plan(&[&["flushall"], &["GET", "a"]]);
    let shape = shape(plan);
    assert!(shape[0].starts_with("L:-"), "{shape:?}");
    assert_eq!(shape[1], "R:Plain");
    assert_eq!(f.traffic.denied_commands_total(), 1);
}

#[test]
fn multi_with_a_refused_command_sends_discard_for_exec() {
    let mut f = Fixture::with(|c| c.policy.deny_commands = vec!["FLUSHALL".into()]);
    let plan = f.plan(&[&["MULTI"], &["SET", "a", "1"], &["FLUSHALL"], &["EXEC"]]);
    let shape = shape(plan);
    assert_eq!(shape[0], "R:Multi");
    assert_eq!(shape[1], "R:Plain");
    assert!(shape[2].starts_with("L:-"), "{shape:?}");
    assert_eq!(shape[3], "R:ExecAborted");
    assert!(plan.upstream.ends_with(b"*1\r\n$7\r\nDISCARD\r\n"));
    assert!(!f.client.pin.doomed, "EXEC consumed the doom");
}

#[test]
fn a_refusal_in_a_transaction_opened_earlier_dooms_its_exec() {
    let mut f = Fixture::with(|c| c.policy.deny_commands = vec!["KEYS".into()]);
    // MULTI was answered +QUEUED in an earlier batch: the pin says so.
    f.client.pin = Pin {
        multi: true,
        ..Pin::default()
    };
    f.plan(&[&["KEYS", "*"]]);
    assert!(f.client.pin.doomed);
    let plan = f.plan(&[&["EXEC"]]);
    assert_eq!(shape(plan), ["R:ExecAborted"]);
}

#[test]
fn select_inside_multi_is_forwarded_with_its_database() {
    let mut f = Fixture::new();
    let plan = f.plan(&[&["MULTI"], &["SELECT", "3"], &["EXEC"]]);
    assert_eq!(shape(plan), ["R:Multi", "R:Select(Some(3))", "R:Exec"]);
    assert!(!plan.shareable);
    // The database changes only when the replies say so (Pin::apply).
    assert_eq!(f.client.wants.db, 0);
    let plan = f.plan(&[&["SELECT", "x"]]);
    assert_eq!(shape(plan), ["R:Select(None)"]);
}

#[test]
fn streaming_commands_end_the_plan_where_they_start() {
    let mut f = Fixture::new();
    let plan = f.plan(&[&["GET", "a"], &["SUBSCRIBE", "ch"], &["GET", "b"]]);
    assert_eq!(shape(plan), ["R:Plain"]);
    assert_eq!(plan.stream_from, Some(20));
    assert_eq!(
        plan.rest,
        Some(47),
        "if the stream cannot start, GET b runs next"
    );
    assert!(plan.needs_upstream());
}

#[test]
fn blocking_commands_may_block_and_never_share() {
    let mut f = Fixture::new();
    let plan = f.plan(&[&["BLPOP", "q", "0"]]);
    assert!(plan.may_block && !plan.shareable);
}

#[test]
fn unauthenticated_clients_get_noauth_and_local_pongs() {
    let mut f = Fixture::with(|c| c.client_password = Some(crate::config::Secret::new("s3cret")));
    let plan = f.plan(&[&["PING"], &["GET", "a"], &["AUTH", "wrong"]]);
    let steps = shape(plan);
    assert_eq!(steps[0], "L:+PONG");
    assert_eq!(steps[1], "L:-NOAUTH Authentication required.");
    assert!(steps[2].starts_with("L:-WRONGPASS"), "{steps:?}");
    assert!(!plan.needs_upstream());
    let plan = f.plan(&[&["AUTH", "s3cret"], &["GET", "a"]]);
    assert_eq!(shape(plan), ["L:+OK", "R:Plain"]);
    assert_eq!(f.traffic.auth_failures_total(), 1);
}

#[test]
fn reset_ends_the_plan_and_resets_nothing_before_the_batch_ran() {
    let mut f = Fixture::new();
    f.client.wants.db = 4;
    f.client.pin.watch = true;
    let plan = f.plan(&[&["SET", "a", "1"], &["RESET"], &["GET", "a"]]);
    assert_eq!(shape(plan), ["R:Plain", "L:+RESET"]);
    assert!(plan.reset);
    assert_eq!(plan.rest, Some(42), "GET runs next, after the reset");
    // The session resets the state once SET ran in database 4.
    assert_eq!(f.client.wants.db, 4);
    assert!(f.client.pin.active());
    f.client.reset();
    assert_eq!(f.client.wants.db, 0);
    assert!(!f.client.pin.active());
}

#[test]
fn reset_and_client_reply_on_are_answered_under_client_reply_off() {
    let mut f = Fixture::new();
    f.plan(&[&["CLIENT", "REPLY", "OFF"]]);
    let plan = f.plan(&[&["CLIENT", "REPLY", "bogus"], &["GET", "a"], &["RESET"]]);
    assert_eq!(shape(plan), ["S:Plain", "L:+RESET"]);
    f.client.reply = super::super::local::ReplyMode::Off;
    let plan = f.plan(&[&["CLIENT", "REPLY", "ON"]]);
    assert_eq!(shape(plan), ["L:+OK"]);
}

#[test]
fn hello_goes_upstream_bare_and_never_shares_a_lane() {
    let mut f = Fixture::new();
    let plan = f.plan(&[&["HELLO", "3", "SETNAME", "app"]]);
    assert_eq!(shape(plan), ["R:Hello(Some(3))"]);
    assert!(!plan.shareable, "a lane does not follow protocol switches");
    assert_eq!(&plan.upstream[..], b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n");
    assert_eq!(f.client.name.as_deref(), Some(&b"app"[..]));
    let mut fresh = Fixture::new();
    let plan = fresh.plan(&[&["HELLO", "3"], &["CLIENT", "GETNAME"]]);
    assert_eq!(
        shape(plan),
        ["R:Hello(Some(3))", "L:_"],
        "null in the protocol asked for"
    );
    let plan = f.plan(&[&["HELLO", "4"]]);
    assert_eq!(shape(plan), ["L:-NOPROTO unsupported protocol version"]);
    let plan = f.plan(&[&["HELLO", "3", "BOGUS"]]);
    assert_eq!(shape(plan), ["L:-ERR Syntax error in HELLO option 'BOGUS'"]);
}

#[test]
fn client_reply_off_and_skip_silence_replies_but_keep_the_commands() {
    let mut f = Fixture::new();
    let plan = f.plan(&[
        &["CLIENT", "REPLY", "SKIP"],
        &["SET", "a", "1"],
        &["GET", "a"],
        &["CLIENT", "REPLY", "OFF"],
        &["SET", "b", "2"],
        &["CLIENT", "SETNAME", "quiet"],
        &["CLIENT", "REPLY", "ON"],
        &["GET", "b"],
    ]);
    assert_eq!(
        shape(plan),
        ["S:Plain", "R:Plain", "S:Plain", "L:+OK", "R:Plain"]
    );
    assert!(!plan.shareable);
    assert_eq!(plan.remote_replies(), 4);
    assert_eq!(f.client.name.as_deref(), Some(&b"quiet"[..]));
}

#[test]
fn reset_and_reply_on_with_extra_arguments_are_refused_and_follow_the_reply_mode() {
    let mut f = Fixture::new();
    let plan = f.plan(&[&["RESET", "x"], &["PING"]]);
    assert_eq!(
        shape(plan),
        [
            "L:-ERR wrong number of arguments for 'reset' command",
            "R:Plain"
        ]
    );
    // Under CLIENT REPLY OFF Redis refuses them before they run: silently.
    let plan = f.plan(&[
        &["CLIENT", "REPLY", "OFF"],
        &["RESET", "x"],
        &["CLIENT", "REPLY", "ON", "x"],
        &["CLIENT", "REPLY", "ON"],
    ]);
    assert_eq!(shape(plan), ["L:+OK"]);
}

#[test]
fn skip_is_ignored_under_off_and_silences_a_reset() {
    // As Redis 7.0.15 answers them (checked straight against it).
    let mut f = Fixture::new();
    let plan = f.plan(&[
        &["CLIENT", "REPLY", "OFF"],
        &["CLIENT", "REPLY", "SKIP"],
        &["PING"],
        &["PING"],
    ]);
    assert_eq!(shape(plan), ["S:Plain", "S:Plain"], "still off");
    let plan = f.plan(&[
        &["CLIENT", "REPLY", "ON"],
        &["CLIENT", "REPLY", "SKIP"],
        &["RESET"],
    ]);
    assert_eq!(shape(plan), ["L:+OK"], "the skip covers RESET's own reply");
    assert!(plan.reset, "which still resets");
    // Inside MULTI under OFF, CLIENT REPLY ON is refused, not run: silenced;
    // RESET runs at once, clears OFF and answers.
    let plan = f.plan(&[
        &["CLIENT", "REPLY", "OFF"],
        &["MULTI"],
        &["CLIENT", "REPLY", "ON"],
        &["RESET"],
    ]);
    assert_eq!(shape(plan), ["S:Multi", "L:+RESET"]);
}

#[test]
fn resp3_tracking_streams_so_invalidations_can_arrive_any_time() {
    let mut f = Fixture::new();
    f.client.wants.proto = 3;
    let plan = f.plan(&[&["GET", "a"], &["CLIENT", "TRACKING", "ON"]]);
    assert_eq!(shape(plan), ["R:Plain"]);
    assert_eq!(plan.stream_from, Some(20));
    f.client.wants.proto = 2;
    let plan = f.plan(&[&["CLIENT", "TRACKING", "ON", "REDIRECT", "7"]]);
    assert_eq!(shape(plan), ["R:PinSession"]);
    // What clients send on connect: HELLO 3 then tracking, in one pipeline.
    let plan = f.plan(&[&["HELLO", "3"], &["CLIENT", "TRACKING", "ON"]]);
    assert_eq!(shape(plan), ["R:Hello(Some(3))"]);
    assert_eq!(plan.stream_from, Some(22));
}

/// A batch Redis refuses whole after a failover may go once more, unless it
/// runs user code, which may have written before returning any error.
#[test]
fn batches_running_scripts_are_never_resendable() {
    let mut f = Fixture::new();
    assert!(f.plan(&[&["SET", "k", "v"], &["INCR", "n"]]).resendable);
    assert!(
        !f.plan(&[&["SET", "k", "v"], &["EVAL", "return 1", "0"]])
            .resendable
    );
    assert!(!f.plan(&[&["fcall", "f", "0"]]).resendable);
    assert!(!f.plan(&[&["EVALSHA_RO", "abc", "0"]]).resendable);
    assert!(f.plan(&[&["GET", "k"]]).resendable);
}

#[test]
fn client_setinfo_answers_as_redis_7_2() {
    // Redis 7.2's clientSetinfoCommand and validateClientAttr (networking.c).
    let mut f = Fixture::new();
    let plan = f.plan(&[
        &["CLIENT", "SETINFO", "lib-name", "redis-py"],
        &["CLIENT", "SETINFO", "LIB-VER", "8.1.0"],
        &["CLIENT", "SETINFO", "Lib-Name", "has space"],
        &["CLIENT", "SETINFO", "lib-name", "caf\u{e9}"],
        &["CLIENT", "SETINFO", "lib-name", ""],
        &["CLIENT", "SETINFO", "flavour", "x"],
        &["CLIENT", "SETINFO", "lib-name"],
    ]);
    assert_eq!(
        shape(plan),
        [
            "L:+OK",
            "L:+OK",
            "L:-ERR Lib-Name cannot contain spaces, newlines or special characters.",
            "L:-ERR lib-name cannot contain spaces, newlines or special characters.",
            "L:+OK",
            "L:-ERR Unrecognized option 'flavour'",
            "L:-ERR wrong number of arguments for 'client|setinfo' command",
        ]
    );
    // A NUL byte: refused in a name, as Redis 7.0 refuses it; an option is
    // quoted up to it, as Redis' `%s` prints it.
    let plan = f.plan(&[&["CLIENT", "SETNAME", "app\0x"], &["HELLO", "3", "B\0X"]]);
    assert_eq!(
        shape(plan),
        [
            "L:-ERR Client names cannot contain spaces, newlines or special characters.",
            "L:-ERR Syntax error in HELLO option 'B'"
        ]
    );
}

#[test]
fn commands_poolside_answers_are_refused_inside_multi_and_doom_it() {
    let mut f = Fixture::new();
    let plan = f.plan(&[
        &["MULTI"],
        &["CLIENT", "SETNAME", "app"],
        &["AUTH", "secret"],
        &["SET", "k", "v"],
        &["CLIENT", "INFO"],
        &["EXEC"],
        &["CLIENT", "GETNAME"],
    ]);
    let refused = "L:-ERR Command not allowed inside a transaction (poolside answers";
    let got = shape(plan);
    assert_eq!(got[0], "R:Multi");
    assert!(got[1].starts_with(refused) && got[1].ends_with("CLIENT SETNAME itself)"));
    assert!(got[2].starts_with(refused) && got[2].ends_with("AUTH itself)"));
    assert_eq!(got[3], "R:Plain");
    assert!(got[4].starts_with(refused) && got[4].ends_with("CLIENT INFO itself)"));
    assert_eq!(got[5], "R:ExecAborted", "EXEC discards what was queued");
    assert_eq!(got[6], "L:$-1", "the refused SETNAME never ran");
    assert!(f.client.name.is_none());
    // QUIT and RESET run at once inside MULTI, as in Redis; a RESET with
    // arguments is refused before it runs, and dooms the transaction.
    let plan = f.plan(&[&["MULTI"], &["RESET", "x"], &["EXEC"]]);
    assert_eq!(
        shape(plan),
        [
            "R:Multi",
            "L:-ERR wrong number of arguments for 'reset' command",
            "R:ExecAborted"
        ]
    );
    let plan = f.plan(&[&["MULTI"], &["RESET"]]);
    assert_eq!(shape(plan), ["R:Multi", "L:+RESET"]);
}
