//! Channels to other Agora services.
//!
//! An upstream setting names the replicas of one service: a URL, a comma-separated
//! list of URLs, or a URL whose host is a DNS name, re-resolved every few seconds,
//! each address being a replica (what a Kubernetes headless service gives). A
//! literal IP address is never re-resolved. [`upstream`] is the one place that
//! turns such a setting into a channel; calls on it are spread over the replicas.
//!
//! tonic's balancer alone keeps picking a replica that refuses connections (a lazy
//! endpoint reports ready and fails the call with the connect error), so each
//! replica is also followed over a connection of its own: it leaves the balancer
//! the moment that connection closes or its `grpc.health.v1` stops saying SERVING,
//! and comes back, on a fresh connection, once it says SERVING again. When no
//! replica is up, all of them stay in, so calls fail at once with UNAVAILABLE
//! instead of waiting.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, SocketAddr},
    str::FromStr,
    sync::Arc,
    time::Duration,
};

use crate::hop::{Hop, LocalServer};
use http::Uri;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{
    net::TcpStream,
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tonic::transport::{Channel, Endpoint, channel::Change};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Giving up on an unreachable service quickly turns into UNAVAILABLE, not a hang.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A call to another service that has not answered by then fails.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How often DNS names are looked up again, so replicas that come and go are
/// followed.
const RESOLVE_INTERVAL: Duration = Duration::from_secs(5);
/// A lookup that takes longer keeps the addresses known so far.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a connected replica is asked for its health.
const CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// How soon a replica that is down is tried again.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// The settings every channel to another service has.
fn configured(endpoint: Endpoint) -> Endpoint {
    endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true)
}

/// A channel to one server at `url` that connects on first use and reconnects
/// after failures; HTTP/2 multiplexes every call over it. For another service,
/// whose setting may name several replicas, use [`upstream`].
pub fn lazy_channel(url: &str) -> Result<Channel, tonic::transport::Error> {
    Ok(configured(Endpoint::from_shared(url.to_owned())?).connect_lazy())
}

/// A channel spread over the replicas that `setting` names (see the module
/// documentation), with the health of those replicas. It connects lazily, so the
/// service may start later; it must be made inside a Tokio runtime.
pub fn upstream(setting: &str) -> Result<Upstream, AddressError> {
    let address: UpstreamAddress = setting.parse()?;
    let mut upstream = Upstream::follow(address);
    upstream.local = crate::hop::find(setting.trim());
    Ok(upstream)
}

/// The replicas of one service behind one channel. Cloning is cheap and shares
/// the connections; following stops once every clone of the channel is dropped.
#[derive(Clone)]
pub struct Upstream {
    channel: Channel,
    health: watch::Receiver<ReplicaHealth>,
    /// The service's server, when it runs in this process.
    local: Option<Arc<LocalServer>>,
}

impl Upstream {
    /// The transport for generated clients: in-process when the service's server
    /// runs in this process and serves, the balanced channel otherwise.
    pub fn hop(&self) -> Hop {
        Hop::new(self.channel.clone(), self.local.clone())
    }

    /// The balanced channel, for calls that must cross the network (health).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Whether at least one replica says SERVING. Right after start-up it waits for
    /// a first answer from every replica (or one SERVING), so bound it with a
    /// timeout.
    pub async fn any_replica_serving(&self) -> bool {
        let mut health = self.health.clone();
        match health
            .wait_for(|health| health.any_serving() || health.all_answered())
            .await
        {
            Ok(health) => health.any_serving(),
            Err(_) => self.health.borrow().any_serving(),
        }
    }

    fn follow(address: UpstreamAddress) -> Self {
        let (channel, changes) = Channel::balance_channel(1024);
        let (health, health_receiver) = watch::channel(ReplicaHealth::default());
        let (events, event_receiver) = mpsc::channel(64);
        let mut follower = Follower {
            address,
            changes,
            health,
            events,
            resolved: BTreeMap::new(),
            unresolvable: BTreeSet::new(),
            origins: BTreeMap::new(),
            states: BTreeMap::new(),
            probes: Probes::default(),
            members: BTreeSet::new(),
        };
        // Literal addresses are known now. Without any, names stand in for
        // themselves until looked up, so no call waits for the first lookup.
        follower.add_literal_addresses();
        for change in follower.membership_changes() {
            let _ = follower.changes.try_send(change);
        }
        tokio::spawn(follower.run(event_receiver));
        Self {
            channel,
            health: health_receiver,
            local: None,
        }
    }
}

/// One entry of an upstream setting.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A literal IP address: one replica, never looked up again.
    Ip(SocketAddr),
    /// A DNS name: every address it resolves to is a replica.
    Name { host: String, port: u16 },
}

impl Target {
    /// What calls name as their `:authority`: the configured host, so a name
    /// stays a name even when the connection goes to one of its addresses.
    fn origin(&self) -> Uri {
        let uri = match self {
            Target::Ip(address) => format!("http://{address}"),
            Target::Name { host, port } => format!("http://{host}:{port}"),
        };
        uri.parse().expect("a host and a port make a URI")
    }
}

/// Where an upstream's replicas are, from a setting such as
/// `http://10.0.0.1:50053,http://10.0.0.2:50053` or `http://posts-service:50053`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UpstreamAddress {
    targets: Vec<Target>,
}

impl FromStr for UpstreamAddress {
    type Err = AddressError;

    fn from_str(setting: &str) -> Result<Self, AddressError> {
        let mut targets = Vec::new();
        for url in setting
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
        {
            let target = parse_target(url).map_err(|problem| AddressError {
                url: url.to_owned(),
                problem,
            })?;
            if !targets.contains(&target) {
                targets.push(target);
            }
        }
        if targets.is_empty() {
            return Err(AddressError {
                url: setting.to_owned(),
                problem: "no URL given",
            });
        }
        Ok(Self { targets })
    }
}

fn parse_target(url: &str) -> Result<Target, &'static str> {
    let uri: Uri = url.parse().map_err(|_| "not a URL")?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(_) => return Err("only http:// is supported"),
        None => return Err("the scheme is missing (http://host:port)"),
    }
    if uri
        .path_and_query()
        .is_some_and(|path| path.as_str() != "/")
    {
        return Err("a path is not allowed");
    }
    let host = uri.host().ok_or("the host is missing")?;
    let port = uri.port_u16().unwrap_or(80);
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    Ok(match literal.parse::<IpAddr>() {
        Ok(ip) => Target::Ip(SocketAddr::new(ip, port)),
        Err(_) => Target::Name {
            host: host.to_ascii_lowercase(),
            port,
        },
    })
}

/// An upstream setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{url:?} is not a usable upstream URL: {problem}")]
pub struct AddressError {
    url: String,
    problem: &'static str,
}

/// What is known of a replica's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not asked yet; it takes calls meanwhile.
    Unknown,
    Serving,
    /// Unreachable, or answering anything but SERVING.
    Down,
}

/// The replicas known now, for [`Upstream::any_replica_serving`].
#[derive(Debug, Clone, Default)]
struct ReplicaHealth {
    states: BTreeMap<SocketAddr, State>,
}

impl ReplicaHealth {
    fn any_serving(&self) -> bool {
        self.states.values().any(|state| *state == State::Serving)
    }

    fn all_answered(&self) -> bool {
        !self.states.is_empty() && !self.states.values().any(|state| *state == State::Unknown)
    }
}

/// What the balancer holds: a replica, or a name not resolved yet, standing in
/// for its addresses (tonic resolves it on connect).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Member {
    Replica(SocketAddr),
    Name(usize),
}

/// Follows an upstream's replicas: looks names up again, probes each replica,
/// and tells the balancer which replicas to use.
struct Follower {
    address: UpstreamAddress,
    changes: mpsc::Sender<Change<Member, Endpoint>>,
    health: watch::Sender<ReplicaHealth>,
    events: mpsc::Sender<(SocketAddr, State)>,
    /// The addresses of each target, by its index, once known.
    resolved: BTreeMap<usize, BTreeSet<SocketAddr>>,
    /// Targets whose last lookup failed, so that is logged once.
    unresolvable: BTreeSet<usize>,
    /// Each replica's `:authority`, from the first target that named it.
    origins: BTreeMap<SocketAddr, Uri>,
    states: BTreeMap<SocketAddr, State>,
    probes: Probes,
    members: BTreeSet<Member>,
}

impl Follower {
    async fn run(mut self, mut events: mpsc::Receiver<(SocketAddr, State)>) {
        let has_names = self
            .address
            .targets
            .iter()
            .any(|target| matches!(target, Target::Name { .. }));
        let mut resolve = tokio::time::interval(RESOLVE_INTERVAL);
        resolve.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // Every clone of the channel is gone: nobody needs the replicas.
                () = self.changes.closed() => return,
                _ = resolve.tick(), if has_names => self.resolve().await,
                Some((replica, state)) = events.recv() => {
                    if let Some(known) = self.states.get_mut(&replica) {
                        *known = state;
                    }
                }
            }
            self.publish_health();
            for change in self.membership_changes() {
                if self.changes.send(change).await.is_err() {
                    return;
                }
            }
        }
    }

    fn add_literal_addresses(&mut self) {
        for (index, target) in self.address.targets.clone().iter().enumerate() {
            if let Target::Ip(address) = target {
                self.set_addresses(index, BTreeSet::from([*address]));
            }
        }
        self.publish_health();
    }

    /// Looks every name up again; a name that cannot be resolved now keeps the
    /// addresses it had.
    async fn resolve(&mut self) {
        for (index, target) in self.address.targets.clone().iter().enumerate() {
            let Target::Name { host, port } = target else {
                continue;
            };
            let lookup = tokio::net::lookup_host((host.as_str(), *port));
            let addresses = match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
                Ok(Ok(addresses)) => addresses.collect::<BTreeSet<_>>(),
                Ok(Err(error)) => {
                    self.lookup_failed(index, host, &error);
                    continue;
                }
                Err(_) => {
                    self.lookup_failed(index, host, &"timed out");
                    continue;
                }
            };
            if addresses.is_empty() {
                self.lookup_failed(index, host, &"no address");
                continue;
            }
            self.unresolvable.remove(&index);
            if self.resolved.get(&index) == Some(&addresses) {
                continue;
            }
            tracing::info!(
                upstream = %host,
                replicas = ?addresses,
                "upstream resolved"
            );
            self.set_addresses(index, addresses);
        }
    }

    fn lookup_failed(&mut self, index: usize, host: &str, error: &dyn std::fmt::Display) {
        if self.unresolvable.insert(index) {
            tracing::warn!(
                upstream = host,
                %error,
                "cannot resolve upstream; keeping the replicas known"
            );
        }
    }

    /// Starts probing new addresses and forgets those no target names any more.
    fn set_addresses(&mut self, index: usize, addresses: BTreeSet<SocketAddr>) {
        self.resolved.insert(index, addresses);
        let known: BTreeSet<SocketAddr> = self.resolved.values().flatten().copied().collect();
        for replica in &known {
            if !self.states.contains_key(replica) {
                let origin = self.address.targets[index].origin();
                self.origins.insert(*replica, origin.clone());
                self.states.insert(*replica, State::Unknown);
                self.probes
                    .start(*replica, origin.clone(), self.events.clone());
            }
        }
        let gone: Vec<SocketAddr> = self
            .states
            .keys()
            .filter(|replica| !known.contains(replica))
            .copied()
            .collect();
        for replica in gone {
            self.states.remove(&replica);
            self.origins.remove(&replica);
            self.probes.stop(replica);
        }
    }

    fn publish_health(&self) {
        self.health.send_replace(ReplicaHealth {
            states: self.states.clone(),
        });
    }

    /// Calls go to the replicas not known to be down; if every one is down, to all
    /// of them, so calls fail at once rather than wait; while no address is known,
    /// to the names themselves.
    fn wanted_members(&self) -> BTreeSet<Member> {
        if self.states.is_empty() {
            return (0..self.address.targets.len())
                .filter(|index| !self.resolved.contains_key(index))
                .map(Member::Name)
                .collect();
        }
        let up: BTreeSet<Member> = self
            .states
            .iter()
            .filter(|(_, state)| **state != State::Down)
            .map(|(replica, _)| Member::Replica(*replica))
            .collect();
        if up.is_empty() {
            self.states.keys().copied().map(Member::Replica).collect()
        } else {
            up
        }
    }

    fn membership_changes(&mut self) -> Vec<Change<Member, Endpoint>> {
        let wanted = self.wanted_members();
        let mut changes = Vec::new();
        for member in self.members.difference(&wanted) {
            changes.push(Change::Remove(member.clone()));
        }
        for member in wanted.difference(&self.members) {
            let endpoint = match member {
                Member::Replica(replica) => {
                    let uri: Uri = format!("http://{replica}")
                        .parse()
                        .expect("an address makes a URI");
                    Endpoint::from(uri).origin(self.origins[replica].clone())
                }
                Member::Name(index) => Endpoint::from(self.address.targets[*index].origin()),
            };
            changes.push(Change::Insert(member.clone(), configured(endpoint)));
        }
        self.members = wanted;
        changes
    }
}

/// The probe task of each replica, stopped when the replica goes or the follower
/// ends.
#[derive(Default)]
struct Probes(HashMap<SocketAddr, JoinHandle<()>>);

impl Probes {
    fn start(
        &mut self,
        replica: SocketAddr,
        origin: Uri,
        events: mpsc::Sender<(SocketAddr, State)>,
    ) {
        let probe = Probe {
            replica,
            origin,
            events,
            state: State::Unknown,
        };
        self.0.insert(replica, tokio::spawn(probe.run()));
    }

    fn stop(&mut self, replica: SocketAddr) {
        if let Some(task) = self.0.remove(&replica) {
            task.abort();
        }
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        self.0.values().for_each(JoinHandle::abort);
    }
}

/// Follows one replica over a connection of its own, which no call uses, so the
/// replica closes it at once when it stops or dies.
struct Probe {
    replica: SocketAddr,
    origin: Uri,
    events: mpsc::Sender<(SocketAddr, State)>,
    state: State,
}

impl Probe {
    async fn run(mut self) {
        loop {
            match ProbeConnection::open(self.replica, &self.origin).await {
                Err(error) => self.report(State::Down, &error).await,
                Ok(mut connection) => loop {
                    match connection.check().await {
                        Ok(ServingStatus::Serving) => self.report(State::Serving, &"").await,
                        Ok(status) => self.report(State::Down, &status.as_str_name()).await,
                        Err(error) => {
                            self.report(State::Down, &error).await;
                            break;
                        }
                    }
                    tokio::select! {
                        () = connection.closed() => {
                            self.report(State::Down, &"connection closed").await;
                            break;
                        }
                        () = tokio::time::sleep(CHECK_INTERVAL) => {}
                    }
                },
            }
            tokio::time::sleep(RETRY_INTERVAL).await;
        }
    }

    async fn report(&mut self, state: State, why: &(dyn std::fmt::Display + Sync)) {
        if state == self.state {
            return;
        }
        let upstream = self.origin.authority().map(|authority| authority.as_str());
        match (self.state, state) {
            (_, State::Down) => tracing::warn!(
                upstream,
                replica = %self.replica,
                reason = %why,
                "upstream replica down"
            ),
            (State::Down, State::Serving) => tracing::info!(
                upstream,
                replica = %self.replica,
                "upstream replica serving again"
            ),
            _ => tracing::debug!(upstream, replica = %self.replica, "upstream replica serving"),
        }
        self.state = state;
        let _ = self.events.send((self.replica, state)).await;
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

type ProbeService = tower::util::BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<hyper::body::Incoming>,
    hyper::Error,
>;

/// An HTTP/2 connection to one replica, for its health only.
struct ProbeConnection {
    health: HealthClient<ProbeService>,
    task: JoinHandle<()>,
}

impl ProbeConnection {
    async fn open(replica: SocketAddr, origin: &Uri) -> Result<Self, BoxError> {
        let handshake = async {
            let stream = TcpStream::connect(replica).await?;
            stream.set_nodelay(true)?;
            let (sender, connection) =
                hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .handshake(TokioIo::new(stream))
                    .await?;
            Ok::<_, BoxError>((sender, connection))
        };
        let (sender, connection) = tokio::time::timeout(CONNECT_TIMEOUT, handshake)
            .await
            .map_err(|_| "connect timed out")??;
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        let service = tower::service_fn(move |request| {
            let mut sender = sender.clone();
            async move { sender.send_request(request).await }
        });
        Ok(Self {
            health: HealthClient::with_origin(ProbeService::new(service), origin.clone()),
            task,
        })
    }

    /// The replica's overall health (`""`). A server without health checks counts
    /// as serving while it answers.
    async fn check(&mut self) -> Result<ServingStatus, BoxError> {
        let request = HealthCheckRequest {
            service: String::new(),
        };
        match tokio::time::timeout(crate::health::PROBE_TIMEOUT, self.health.check(request)).await {
            Err(_) => Err("health check timed out".into()),
            Ok(Ok(answer)) => Ok(answer.into_inner().status()),
            Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => {
                Ok(ServingStatus::Serving)
            }
            Ok(Err(status)) => Err(status.into()),
        }
    }

    /// Completes when the replica closes the connection, or it breaks.
    async fn closed(&mut self) {
        let _ = (&mut self.task).await;
    }
}

impl Drop for ProbeConnection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use tonic::service::interceptor::InterceptedService;

    use super::*;

    fn ip(address: &str) -> Target {
        Target::Ip(address.parse().unwrap())
    }

    fn name(host: &str, port: u16) -> Target {
        Target::Name {
            host: host.to_owned(),
            port,
        }
    }

    #[test]
    fn a_setting_is_a_list_of_literal_addresses_and_names() {
        let cases = [
            ("http://10.0.0.1:50053", vec![ip("10.0.0.1:50053")]),
            (
                "http://10.0.0.1:50053,http://10.0.0.2:50053",
                vec![ip("10.0.0.1:50053"), ip("10.0.0.2:50053")],
            ),
            (
                " http://10.0.0.1:50053 , http://10.0.0.1:50053, ",
                vec![ip("10.0.0.1:50053")],
            ),
            ("http://[::1]:50053/", vec![ip("[::1]:50053")]),
            (
                "http://posts-service:50053",
                vec![name("posts-service", 50053)],
            ),
            (
                "http://Posts.Agora.svc.cluster.local:50053,http://10.0.0.9:50053",
                vec![
                    name("posts.agora.svc.cluster.local", 50053),
                    ip("10.0.0.9:50053"),
                ],
            ),
            ("http://localhost", vec![name("localhost", 80)]),
        ];
        for (setting, expected) in cases {
            let address: UpstreamAddress = setting
                .parse()
                .unwrap_or_else(|error| panic!("{setting}: {error}"));
            assert_eq!(address.targets, expected, "for {setting:?}");
        }
    }

    #[test]
    fn a_setting_that_names_no_usable_url_is_refused() {
        let cases = [
            ("", "no URL given"),
            (" , ", "no URL given"),
            ("10.0.0.1:50053", "the scheme is missing"),
            ("https://10.0.0.1:50053", "only http://"),
            ("http://10.0.0.1:50053/agora", "a path is not allowed"),
            ("http://10.0.0.1:50053,not a url", "not a URL"),
        ];
        for (setting, expected) in cases {
            let error = setting
                .parse::<UpstreamAddress>()
                .expect_err(&format!("{setting:?} is refused"));
            assert!(
                error.to_string().contains(expected),
                "{setting:?}: {error} should say {expected:?}"
            );
        }
    }

    /// A server answering health checks SERVING, that counts the calls the tests
    /// make (marked `x-test`), not its probes, and stops gracefully when dropped.
    struct Replica {
        address: SocketAddr,
        calls: Arc<AtomicUsize>,
        _stop: tokio::sync::oneshot::Sender<()>,
    }

    impl Replica {
        async fn start(address: SocketAddr) -> Self {
            let listener = tokio::net::TcpListener::bind(address).await.unwrap();
            let address = listener.local_addr().unwrap();
            let (_, health) = tonic_health::server::health_reporter();
            let calls = Arc::new(AtomicUsize::new(0));
            let counted = calls.clone();
            let health = InterceptedService::new(health, move |request: tonic::Request<()>| {
                if request.metadata().contains_key("x-test") {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
                Ok(request)
            });
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(health)
                    .serve_with_incoming_shutdown(
                        tonic::transport::server::TcpIncoming::from(listener),
                        async {
                            let _ = stopped.await;
                        },
                    ),
            );
            Self {
                address,
                calls,
                _stop: stop,
            }
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::Relaxed)
        }
    }

    fn loopback() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    fn refusing_address() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    /// Waits until every replica has answered its first probe.
    async fn settled(upstream: &Upstream) {
        let mut health = upstream.health.clone();
        tokio::time::timeout(
            Duration::from_secs(10),
            health.wait_for(|h| h.all_answered()),
        )
        .await
        .expect("every replica is probed in time")
        .expect("the follower runs");
    }

    async fn failed_checks(upstream: &Upstream, calls: usize) -> usize {
        let mut client = HealthClient::new(upstream.channel());
        let mut failed = 0;
        for _ in 0..calls {
            let mut request = tonic::Request::new(HealthCheckRequest {
                service: String::new(),
            });
            request
                .metadata_mut()
                .insert("x-test", "1".parse().unwrap());
            if client.check(request).await.is_err() {
                failed += 1;
            }
        }
        failed
    }

    /// Waits until the follower has seen `replica` in `state`.
    async fn replica_is(upstream: &Upstream, replica: SocketAddr, state: State) {
        let mut health = upstream.health.clone();
        tokio::time::timeout(
            Duration::from_secs(10),
            health.wait_for(|h| h.states.get(&replica) == Some(&state)),
        )
        .await
        .unwrap_or_else(|_| panic!("{replica} is {state:?} in time"))
        .expect("the follower runs");
    }

    #[tokio::test]
    async fn a_replica_that_refuses_connections_gets_no_calls() {
        let (live, dead) = (Replica::start(loopback()).await, refusing_address());
        let upstream = upstream(&format!("http://{dead},http://{}", live.address)).unwrap();
        settled(&upstream).await;

        assert_eq!(failed_checks(&upstream, 200).await, 0);
        assert!(upstream.any_replica_serving().await);
    }

    #[tokio::test]
    async fn a_replica_that_stops_gets_no_calls_and_gets_them_again_once_back() {
        let a = Replica::start(loopback()).await;
        let b = Replica::start(loopback()).await;
        let upstream = upstream(&format!("http://{},http://{}", a.address, b.address)).unwrap();
        settled(&upstream).await;
        assert_eq!(failed_checks(&upstream, 100).await, 0);
        assert!(a.calls() > 0 && b.calls() > 0, "calls go to both");

        let address = b.address;
        drop(b);
        replica_is(&upstream, address, State::Down).await;
        assert_eq!(failed_checks(&upstream, 100).await, 0, "with one stopped");

        let b = Replica::start(address).await;
        replica_is(&upstream, address, State::Serving).await;
        assert_eq!(failed_checks(&upstream, 100).await, 0, "once it is back");
        assert!(b.calls() > 0, "the replica back gets calls again");
    }

    #[tokio::test]
    async fn with_every_replica_down_calls_fail_at_once() {
        let upstream = upstream(&format!("http://{}", refusing_address())).unwrap();
        settled(&upstream).await;

        let calls = tokio::time::timeout(Duration::from_secs(5), failed_checks(&upstream, 3));
        assert_eq!(calls.await.expect("no call waits"), 3);
        assert!(!upstream.any_replica_serving().await);
    }

    #[tokio::test]
    async fn a_dns_name_stands_for_every_address_it_resolves_to() {
        // localhost may also resolve to ::1, where nothing listens: that replica is
        // down and gets no calls.
        let live = Replica::start(loopback()).await;
        let upstream = upstream(&format!("http://localhost:{}", live.address.port())).unwrap();
        let mut health = upstream.health.clone();
        tokio::time::timeout(
            Duration::from_secs(10),
            health.wait_for(|h| h.states.contains_key(&live.address) && h.all_answered()),
        )
        .await
        .expect("the name is resolved and probed in time")
        .unwrap();

        assert_eq!(failed_checks(&upstream, 50).await, 0);
        assert!(upstream.any_replica_serving().await);
    }
}
