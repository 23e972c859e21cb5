//! Sentinel: which node is the primary, and when that changes.
//!
//! poolside asks every Sentinel it knows, every `poll_interval_ms`,
//! `SENTINEL get-master-addr-by-name`, `SENTINEL master` (its flags and
//! config epoch) and `SENTINEL sentinels` (so further Sentinels are
//! learned), and listens to each one's events (`PSUBSCRIBE *`) so a
//! failover is seen as it happens. A new address becomes the primary only
//! once `ROLE` on it says `master`, and only when it comes from the newest
//! configuration (the highest config epoch): a Sentinel that has not heard
//! of the failover yet never moves poolside back to the demoted node.
//!
//! What the data path sees is the pool's [`Primary`]: the address new
//! connections go to, swapped by [`Pool::switch_primary`], and the hold,
//! set while a Sentinel reports the primary down or failing over (events
//! `+sdown`/`+odown`/`+try-failover`/`+failover-*`/`+promoted-slave`..., or
//! the flags `s_down`/`o_down`/`failover_in_progress` in a poll). Sentinel
//! connections are poolside's own, never the pool's.

pub mod value;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::config::SecretCell;
use crate::pool::{
    host_of, Address, Pool, Primary, Target, TlsTarget, UpstreamConn, MAX_SENTINELS,
};
use crate::resp::write_command;
use value::{parse, Value};

/// How the Sentinels are reached.
#[derive(Debug, Clone)]
pub struct SentinelLink {
    pub master_name: String,
    pub addresses: Vec<String>,
    pub username: Option<String>,
    pub password: SecretCell,
    /// Built for the first Sentinel; re-targeted per host.
    pub tls: Option<TlsTarget>,
    /// One connect (with AUTH) or one query may take this long.
    pub timeout: Duration,
    pub poll_every: Duration,
}

/// The Sentinels poolside follows. Cheap to clone.
#[derive(Clone)]
pub struct Sentinels {
    inner: Arc<Inner>,
}

struct Inner {
    link: SentinelLink,
    pool: Pool,
    primary: Arc<Primary>,
    /// The data nodes' target (credentials, TLS, db), for `ROLE` checks.
    data: Target,
    known: Mutex<Vec<Known>>,
    /// The config epoch of the configuration the current primary came from.
    epoch: AtomicU64,
    /// One check-and-switch at a time.
    switching: tokio::sync::Mutex<()>,
    /// Poll connections, by Sentinel address.
    conns: Mutex<HashMap<String, UpstreamConn>>,
}

#[derive(Debug, Clone)]
struct Known {
    address: String,
    reachable: bool,
    /// Why the last query failed.
    error: Option<String>,
    watched: bool,
}

/// One Sentinel as `/pool/status` shows it.
#[derive(Debug, Clone)]
pub struct SentinelState {
    pub address: String,
    pub reachable: bool,
    pub error: Option<String>,
}

/// What one Sentinel answered to a poll.
#[derive(Debug)]
struct Answer {
    /// `get-master-addr-by-name`: where it says the primary is.
    primary: Option<String>,
    /// `SENTINEL master`: the master as it monitors it, and its flags.
    monitored: Option<String>,
    flags: String,
    epoch: u64,
    others: Vec<String>,
}

impl Sentinels {
    /// Starts following the Sentinels: polls (the first one now, which is
    /// the discovery) and one event listener per Sentinel. Returns at once:
    /// poolside starts while no Sentinel answers.
    pub fn spawn(
        link: SentinelLink,
        pool: Pool,
        data: Target,
        shutdown: watch::Receiver<bool>,
    ) -> (Sentinels, tokio::task::JoinHandle<()>) {
        let primary = pool
            .primary()
            .cloned()
            .expect("a Sentinel pool has a primary");
        let known = link
            .addresses
            .iter()
            .take(MAX_SENTINELS)
            .map(|a| Known {
                address: a.clone(),
                reachable: false,
                error: Some("not asked yet".into()),
                watched: false,
            })
            .collect();
        let sentinels = Sentinels {
            inner: Arc::new(Inner {
                link,
                pool,
                primary,
                data,
                known: Mutex::new(known),
                epoch: AtomicU64::new(0),
                switching: Default::default(),
                conns: Default::default(),
            }),
        };
        let task = tokio::spawn(sentinels.clone().run(shutdown));
        (sentinels, task)
    }

    pub fn master_name(&self) -> &str {
        &self.inner.link.master_name
    }

    /// Every Sentinel known, and whether it answered the last poll.
    pub fn states(&self) -> Vec<SentinelState> {
        self.known()
            .iter()
            .map(|k| SentinelState {
                address: k.address.clone(),
                reachable: k.reachable,
                error: k.error.clone(),
            })
            .collect()
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Vec<Known>> {
        self.inner.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut listeners = JoinSet::new();
        let mut tick = tokio::time::interval(self.inner.link.poll_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let primary = self.inner.primary.clone();
            tokio::select! {
                _ = tick.tick() => {}
                // A -READONLY from the primary: ask now.
                _ = primary.poked() => {}
                _ = shutdown.changed() => break,
            }
            self.poll().await;
            // A listener for every Sentinel known, learned ones included.
            let unwatched: Vec<(usize, String)> = self
                .known()
                .iter_mut()
                .enumerate()
                .filter(|(_, k)| !k.watched)
                .map(|(i, k)| {
                    k.watched = true;
                    (i, k.address.clone())
                })
                .collect();
            for (index, address) in unwatched {
                listeners.spawn(self.clone().listen(index, address, shutdown.clone()));
            }
        }
        listeners.shutdown().await;
    }

    /// Asks every known Sentinel at once; follows the newest configuration.
    async fn poll(&self) {
        let addresses: Vec<String> = self.known().iter().map(|k| k.address.clone()).collect();
        let mut asks = JoinSet::new();
        for (index, address) in addresses.into_iter().enumerate() {
            let me = self.clone();
            asks.spawn(async move {
                let answer = me.ask(&address).await;
                (index, answer)
            });
        }
        let mut answers = Vec::new();
        let mut failures = Vec::new();
        while let Some(joined) = asks.join_next().await {
            let Ok((index, answer)) = joined else {
                continue;
            };
            let address = {
                let mut known = self.known();
                let k = &mut known[index];
                k.reachable = answer.is_ok();
                k.error = answer.as_ref().err().cloned();
                k.address.clone()
            };
            match answer {
                Ok(answer) => answers.push((index, address, answer)),
                Err(e) => {
                    // It cannot tell: its earlier report stands no longer.
                    self.inner.primary.report(index, None);
                    failures.push(format!("{address}: {e}"));
                }
            }
        }
        let current = self.inner.primary.address();
        // Checked at most once per poll, only when a Sentinel alone thinks
        // the primary down (`s_down` without `o_down`).
        let mut answers_us: Option<bool> = None;
        for (index, address, answer) in &answers {
            self.learn(&answer.others);
            // Flags about the node poolside uses; a Sentinel still
            // monitoring the old primary speaks of that one.
            let about_current =
                current.is_some() && answer.monitored.as_deref() == current.as_deref();
            let has = |flag: &str| answer.flags.split(',').any(|x| x == flag);
            let down = ["s_down", "o_down", "failover_in_progress"]
                .into_iter()
                .filter(|f| has(f))
                .collect::<Vec<_>>();
            let mut report = (about_current && !down.is_empty())
                .then(|| format!("Sentinel {address} reports the primary {}", down.join(",")));
            if report.is_some() && !has("o_down") && !has("failover_in_progress") {
                let current = current.as_deref().unwrap_or_default();
                if *answers_us.get_or_insert(self.answers(current).await) {
                    report = None;
                }
            }
            self.inner.primary.report(*index, report);
        }
        // The newest configuration first.
        answers.sort_by_key(|(_, _, a)| std::cmp::Reverse(a.epoch));
        let mut tried = Vec::new();
        let mut refused = Vec::new();
        for (_, address, answer) in &answers {
            let Some(candidate) = &answer.primary else {
                continue;
            };
            if current.as_deref() == Some(candidate.as_str()) {
                self.inner.epoch.fetch_max(answer.epoch, Ordering::AcqRel);
                break;
            }
            if current.is_some() && answer.epoch < self.inner.epoch.load(Ordering::Acquire) {
                // Older than what poolside follows: this Sentinel lags.
                break;
            }
            if tried.contains(candidate) {
                continue;
            }
            tried.push(candidate.clone());
            let why = format!(
                "Sentinel {address} names it (config epoch {})",
                answer.epoch
            );
            match self.check_and_switch(candidate, answer.epoch, &why).await {
                Ok(()) => break,
                Err(e) => refused.push(e),
            }
            if current.is_some() {
                break;
            }
        }
        if let (true, Some(current)) = (
            self.inner.primary.is_suspect(),
            self.inner.primary.address(),
        ) {
            // Still the one named: poolside holds until ROLE says it is a primary.
            match self.role_of(&current).await {
                Ok(role) if role == "master" => self.inner.primary.cleared(),
                Ok(role) => {
                    debug!(primary = %current, role, "Sentinel: the named primary is not one (yet)")
                }
                Err(e) => {
                    debug!(primary = %current, error = %e, "Sentinel: cannot ask the primary its ROLE")
                }
            }
        }
        if self.inner.primary.address().is_none() {
            let why = if answers.is_empty() {
                format!("no Sentinel answered ({})", failures.join("; "))
            } else if tried.is_empty() {
                format!(
                    "no Sentinel knows a master named '{}'",
                    self.inner.link.master_name
                )
            } else {
                format!(
                    "no node the Sentinels named is a primary ({})",
                    refused.join("; ")
                )
            };
            if self.inner.primary.unknown(why.clone()) {
                warn!(master = %self.inner.link.master_name, reason = %why, "Sentinel: no primary");
            }
            self.inner
                .pool
                .health
                .mark_down(&crate::pool::UpstreamError::NoPrimary);
        }
    }

    fn learn(&self, others: &[String]) {
        let mut known = self.known();
        for other in others {
            if known.len() < MAX_SENTINELS && !known.iter().any(|k| &k.address == other) {
                info!(sentinel = %other, "Sentinel: learned another Sentinel");
                known.push(Known {
                    address: other.clone(),
                    reachable: false,
                    error: Some("not asked yet".into()),
                    watched: false,
                });
            }
        }
    }

    /// One poll of one Sentinel, on its kept connection.
    async fn ask(&self, address: &str) -> Result<Answer, String> {
        let taken = self
            .inner
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(address);
        let timeout = self.inner.link.timeout;
        let master = self.inner.link.master_name.as_bytes();
        let query = async {
            let mut conn = match taken {
                Some(conn) => conn,
                None => self.connect(address).await?,
            };
            let mut req = BytesMut::new();
            for args in [
                &[&b"SENTINEL"[..], b"get-master-addr-by-name", master][..],
                &[b"SENTINEL", b"master", master],
                &[b"SENTINEL", b"sentinels", master],
            ] {
                write_command(&mut req, args.iter().copied());
            }
            conn.write_batch(&[&req]).await.map_err(|e| e.to_string())?;
            let mut replies = Vec::new();
            for _ in 0..3 {
                let mut out = BytesMut::new();
                conn.read_reply(&mut out).await.map_err(|e| e.to_string())?;
                replies.push(parse(&out).map(|(v, _)| v).unwrap_or(Value::Nil));
            }
            conn.finish_batch();
            Ok::<_, String>((conn, replies))
        };
        let (conn, replies) = tokio::time::timeout(timeout, query)
            .await
            .map_err(|_| format!("no answer within {} ms", timeout.as_millis()))??;
        self.inner
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(address.to_string(), conn);
        let primary = match &replies[0] {
            Value::Array(a) if a.len() == 2 => match (a[0].text(), a[1].text()) {
                (Some(host), Some(port)) => Some(join(host, port)),
                _ => None,
            },
            Value::Error(e) => return Err(e.clone()),
            _ => None,
        };
        let monitored = match (replies[1].field("ip"), replies[1].field("port")) {
            (Some(host), Some(port)) => Some(join(host, port)),
            _ => None,
        };
        let others = replies[2]
            .items()
            .iter()
            .filter_map(|s| Some(join(s.field("ip")?, s.field("port")?)))
            .collect();
        Ok(Answer {
            primary,
            monitored,
            flags: replies[1].field("flags").unwrap_or_default().to_string(),
            epoch: replies[1]
                .field("config-epoch")
                .and_then(|e| e.parse().ok())
                .unwrap_or(0),
            others,
        })
    }

    /// A connection to a Sentinel, authenticated with its own credentials.
    async fn connect(&self, address: &str) -> Result<UpstreamConn, String> {
        let link = &self.inner.link;
        let tls = match &link.tls {
            Some(tls) => Some(tls.for_host(host_of(address)).map_err(|e| e.to_string())?),
            None => None,
        };
        let opening = async {
            let mut conn = UpstreamConn::open(address, tls.as_ref(), None)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(password) = link.password.get() {
                conn.auth(link.username.as_deref(), password.expose())
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(conn)
        };
        tokio::time::timeout(link.timeout, opening)
            .await
            .map_err(|_| format!("no connection within {} ms", link.timeout.as_millis()))?
    }

    /// Makes `candidate` the primary if `ROLE` on it says `master`.
    /// `Ok` when it is the primary afterwards; why not, otherwise.
    async fn check_and_switch(&self, candidate: &str, epoch: u64, why: &str) -> Result<(), String> {
        let _one = self.inner.switching.lock().await;
        if self.inner.primary.address().as_deref() == Some(candidate) {
            return Ok(());
        }
        match self.role_of(candidate).await {
            Ok(role) if role == "master" => {}
            Ok(role) => {
                debug!(
                    candidate,
                    role, "Sentinel: the named node is not a primary (yet)"
                );
                return Err(format!("{candidate}: ROLE says {role}"));
            }
            Err(e) => {
                debug!(candidate, error = %e, "Sentinel: cannot ask the named node its ROLE");
                return Err(format!("{candidate}: {e}"));
            }
        }
        let from = self.inner.primary.address();
        self.inner.epoch.fetch_max(epoch, Ordering::AcqRel);
        let failover = self.inner.pool.switch_primary(candidate);
        let master = &self.inner.link.master_name;
        match from {
            Some(from) if failover => {
                let view = self.inner.primary.view();
                warn!(
                    alert = "sentinel_failover",
                    master = %master,
                    from = %from,
                    to = %candidate,
                    failovers = view.failovers,
                    reason = %why,
                    "ALERT failover: the primary moved; new connections go to the new primary, \
                     connections and pinned sessions on the old one are closed"
                );
            }
            _ => {
                info!(master = %master, primary = %candidate, reason = %why, "Sentinel: primary found")
            }
        }
        Ok(())
    }

    /// `ROLE` on `address` says `master`, within the Sentinel timeout.
    async fn answers(&self, address: &str) -> bool {
        let asked = tokio::time::timeout(self.inner.link.timeout, self.role_of(address)).await;
        matches!(asked, Ok(Ok(role)) if role == "master")
    }

    async fn role_of(&self, address: &str) -> Result<String, String> {
        let tls = match &self.inner.data.tls {
            Some(tls) => Some(tls.for_host(host_of(address)).map_err(|e| e.to_string())?),
            None => None,
        };
        let target = Target {
            address: Address::Fixed(address.to_string()),
            tls,
            client_name: None,
            readonly: false,
            ..self.inner.data.clone()
        };
        let asking = async {
            let mut conn = UpstreamConn::connect(&target)
                .await
                .map_err(|e| e.to_string())?;
            let reply = conn.command(&[b"ROLE"]).await.map_err(|e| e.to_string())?;
            let role = parse(&reply)
                .and_then(|(v, _)| v.items().first()?.text().map(str::to_string))
                .ok_or_else(|| format!("ROLE answered {}", String::from_utf8_lossy(&reply)))?;
            Ok(role)
        };
        let timeout = self.inner.link.timeout + self.inner.data.connect_timeout;
        tokio::time::timeout(timeout, asking)
            .await
            .map_err(|_| "no ROLE answer in time".to_string())?
    }

    /// Listens to one Sentinel's events until shutdown, reconnecting.
    async fn listen(self, index: usize, address: String, mut shutdown: watch::Receiver<bool>) {
        loop {
            let listening = self.listen_once(index, &address);
            let ended = tokio::select! {
                e = listening => e,
                _ = shutdown.changed() => return,
            };
            debug!(sentinel = %address, reason = %ended, "Sentinel: event connection lost");
            self.inner.primary.report(index, None);
            tokio::select! {
                _ = tokio::time::sleep(self.inner.link.poll_every) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn listen_once(&self, index: usize, address: &str) -> String {
        let mut conn = match self.connect(address).await {
            Ok(conn) => conn,
            Err(e) => return e,
        };
        let mut req = BytesMut::new();
        write_command(&mut req, [&b"PSUBSCRIBE"[..], b"*"].into_iter());
        if let Err(e) = conn.write_batch(&[&req]).await {
            return e.to_string();
        }
        loop {
            let mut out = BytesMut::new();
            if let Err(e) = conn.read_reply(&mut out).await {
                return e.to_string();
            }
            let Some((message, _)) = parse(&out) else {
                return "malformed event".into();
            };
            let items = message.items();
            // pmessage, pattern, channel, payload
            if items.len() == 4 && items[0].text() == Some("pmessage") {
                if let (Some(event), Some(payload)) = (items[2].text(), items[3].text()) {
                    self.on_event(index, address, event, payload).await;
                }
            }
        }
    }

    /// One Sentinel event about any master: acted on when it is ours.
    async fn on_event(&self, index: usize, sentinel: &str, event: &str, payload: &str) {
        let Some(about) = Event::parse(event, payload) else {
            return;
        };
        if about.master != self.inner.link.master_name {
            return;
        }
        debug!(sentinel, event, payload, "Sentinel event");
        let primary = &self.inner.primary;
        let current = primary.address();
        let ours = about.master_address.is_some()
            && about.master_address == current.as_deref().map(str::to_string);
        match event {
            "+switch-master" | "+promoted-slave" => {
                if let Some(to) = about.to {
                    // Newer than anything polled: the failover's own epoch.
                    let epoch = self.inner.epoch.load(Ordering::Acquire) + 1;
                    let why = format!("{event} from Sentinel {sentinel}");
                    if self.check_and_switch(&to, epoch, &why).await.is_err() && ours {
                        primary.report(
                            index,
                            Some(format!("{event} named {to}, not a primary yet")),
                        );
                    }
                }
            }
            // One Sentinel's opinion (a partition between it and the
            // primary, say) holds nothing while the primary answers poolside.
            "+sdown" if about.is_master && ours => {
                let current = current.as_deref().unwrap_or_default();
                if !self.answers(current).await {
                    primary.report(
                        index,
                        Some(format!("Sentinel {sentinel}: {event} {payload}")),
                    );
                }
            }
            "+odown" if about.is_master && ours => {
                primary.report(
                    index,
                    Some(format!("Sentinel {sentinel}: {event} {payload}")),
                );
            }
            "-sdown" | "-odown" if about.is_master && ours => primary.report(index, None),
            _ if event.starts_with("-failover-abort") && ours => primary.report(index, None),
            "+try-failover" | "+elected-leader" | "+selected-slave" | "+failover-end" if ours => {
                primary.report(
                    index,
                    Some(format!("Sentinel {sentinel}: {event} {payload}")),
                );
            }
            _ if event.starts_with("+failover-state-") && ours => {
                primary.report(
                    index,
                    Some(format!("Sentinel {sentinel}: {event} {payload}")),
                );
            }
            _ => {}
        }
    }
}

/// What an event says, from its payload: `<type> <name> <ip> <port> [@
/// <master> <ip> <port>]`, or `<master> <old-ip> <old-port> <new-ip>
/// <new-port>` for `+switch-master`.
#[derive(Debug, PartialEq, Eq)]
struct Event {
    master: String,
    /// The master's address as the event gives it.
    master_address: Option<String>,
    /// The event is about the master itself (not a replica or Sentinel).
    is_master: bool,
    /// Where the primary is now (`+switch-master`, `+promoted-slave`).
    to: Option<String>,
}

impl Event {
    fn parse(event: &str, payload: &str) -> Option<Event> {
        let words: Vec<&str> = payload.split(' ').collect();
        if event == "+switch-master" {
            if words.len() < 5 {
                return None;
            }
            return Some(Event {
                master: words[0].into(),
                master_address: Some(join(words[1], words[2])),
                is_master: true,
                to: Some(join(words[3], words[4])),
            });
        }
        if words.len() < 4 {
            return None;
        }
        if words[0] == "master" {
            return Some(Event {
                master: words[1].into(),
                master_address: Some(join(words[2], words[3])),
                is_master: true,
                to: None,
            });
        }
        let at = words.iter().position(|w| *w == "@")?;
        let master = words.get(at + 1)?;
        let master_address = match (words.get(at + 2), words.get(at + 3)) {
            (Some(ip), Some(port)) => Some(join(ip, port)),
            _ => None,
        };
        let to = (event == "+promoted-slave").then(|| join(words[2], words[3]));
        Some(Event {
            master: master.to_string(),
            master_address,
            is_master: false,
            to,
        })
    }
}

fn join(host: &str, port: &str) -> String {
    match port.parse::<u16>() {
        Ok(port) => crate::config::url::join_host_port(host, port),
        Err(_) => format!("{host}:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_say_which_master_and_where_it_went() {
        let e = Event::parse("+switch-master", "mymaster 127.0.0.1 7001 127.0.0.1 7002").unwrap();
        assert_eq!(e.master, "mymaster");
        assert_eq!(e.master_address.as_deref(), Some("127.0.0.1:7001"));
        assert_eq!(e.to.as_deref(), Some("127.0.0.1:7002"));
        let e = Event::parse("+odown", "master mymaster 10.0.0.1 6379 #quorum 2/2").unwrap();
        assert!(e.is_master);
        assert_eq!(e.master_address.as_deref(), Some("10.0.0.1:6379"));
        let e = Event::parse(
            "+promoted-slave",
            "slave 127.0.0.1:7002 127.0.0.1 7002 @ mymaster 127.0.0.1 7001",
        )
        .unwrap();
        assert!(!e.is_master);
        assert_eq!(e.master, "mymaster");
        assert_eq!(e.master_address.as_deref(), Some("127.0.0.1:7001"));
        assert_eq!(e.to.as_deref(), Some("127.0.0.1:7002"));
        let e = Event::parse(
            "+sdown",
            "slave 127.0.0.1:7002 127.0.0.1 7002 @ mymaster 127.0.0.1 7001",
        )
        .unwrap();
        assert!(!e.is_master && e.to.is_none());
        assert_eq!(Event::parse("+new-epoch", "5"), None);
        assert_eq!(Event::parse("+switch-master", "m 1 2"), None);
        let e = Event::parse("+switch-master", "m ::1 1 ::1 2").unwrap();
        assert_eq!(e.to.as_deref(), Some("[::1]:2"));
    }
}
