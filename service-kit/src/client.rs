//! Channels to other Agora services.
//!
//! An upstream setting names the replicas of one service: a URL, a comma-separated
//! list of URLs, or a URL whose host is a DNS name, re-resolved every few seconds,
//! each address being a replica (what a Kubernetes headless service gives). A
//! literal IP address is never re-resolved. [`upstream`] is the one place that
//! turns such a setting into a channel; calls on it are spread over the replicas.
//!
//! A URL with `https://` is reached over TLS: the server's certificate must be valid
//! for the URL's host (also when the connection goes to one of a name's addresses)
//! and issued by a CA of `UPSTREAM_CA_FILE` (the Mozilla roots without it); with
//! `UPSTREAM_CERT_FILE` and `UPSTREAM_KEY_FILE` this process presents that
//! certificate, for mutual TLS. The files are the process's, read again when they
//! change or on SIGHUP: new connections use what they then hold, connections open
//! keep theirs. See [`install_tls`].
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
    io,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    pin::Pin,
    str::FromStr,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use crate::{
    error::error_chain,
    hop::{Hop, LocalServer},
    pem_files::{self, Followed, PemFileError},
};
use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::{
    net::TcpStream,
    sync::{Notify, mpsc, watch},
    task::JoinHandle,
};
use tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity, channel::Change,
};
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
/// How often the TLS files are looked at, unless `TLS_RELOAD_SECS` says otherwise
/// (the listeners' setting: one pace for every certificate of a process).
const TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

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
/// after failures; HTTP/2 multiplexes every call over it. An `https://` URL is
/// reached with this process's upstream TLS settings. For another service, whose
/// setting may name several replicas, use [`upstream`].
pub fn lazy_channel(url: &str) -> Result<Channel, SettingError> {
    let invalid = |problem| AddressError {
        url: url.to_owned(),
        problem,
    };
    let uri: Uri = url.parse().map_err(|_| invalid("not a URL"))?;
    let tls = match uri.scheme_str() {
        Some("https") => Some(process_tls()?),
        _ => None,
    };
    let endpoint = secured(Endpoint::from(uri.clone()), &uri, tls.as_ref())
        .map_err(|_| invalid("the host is not a valid TLS server name"))?;
    Ok(configured(endpoint).connect_lazy())
}

/// A channel spread over the replicas that `setting` names (see the module
/// documentation), with the health of those replicas. It connects lazily, so the
/// service may start later; it must be made inside a Tokio runtime.
pub fn upstream(setting: &str) -> Result<Upstream, SettingError> {
    let address: UpstreamAddress = setting.parse()?;
    let tls = match address.targets.iter().any(|target| target.tls) {
        true => Some(process_tls()?),
        false => None,
    };
    let mut upstream = Upstream::follow(address, tls);
    upstream.local = crate::hop::find(setting.trim());
    Ok(upstream)
}

/// An upstream setting, or the TLS files an `https://` one needs, that cannot be
/// used.
#[derive(Debug, thiserror::Error)]
pub enum SettingError {
    #[error(transparent)]
    Address(#[from] AddressError),
    #[error(transparent)]
    Tls(#[from] UpstreamTlsError),
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

    fn follow(address: UpstreamAddress, tls: Option<ClientTls>) -> Self {
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
            tls,
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
struct Target {
    place: Place,
    /// `https://`: over TLS.
    tls: bool,
}

/// Where a target's replicas are.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    /// A literal IP address: one replica, never looked up again.
    Ip(SocketAddr),
    /// A DNS name: every address it resolves to is a replica.
    Name { host: String, port: u16 },
}

impl Target {
    fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    /// What calls name as their `:authority`, and what a TLS certificate must be
    /// valid for: the configured host, so a name stays a name even when the
    /// connection goes to one of its addresses.
    fn origin(&self) -> Uri {
        let scheme = self.scheme();
        let uri = match &self.place {
            Place::Ip(address) => format!("{scheme}://{address}"),
            Place::Name { host, port } => format!("{scheme}://{host}:{port}"),
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
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        Some(_) => return Err("only http:// and https:// are supported"),
        None => return Err("the scheme is missing (http://host:port)"),
    };
    if uri
        .path_and_query()
        .is_some_and(|path| path.as_str() != "/")
    {
        return Err("a path is not allowed");
    }
    let host = uri.host().ok_or("the host is missing")?;
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if tls && ServerName::try_from(literal).is_err() {
        return Err("the host is not a valid TLS server name");
    }
    let place = match literal.parse::<IpAddr>() {
        Ok(ip) => Place::Ip(SocketAddr::new(ip, port)),
        Err(_) => Place::Name {
            host: host.to_ascii_lowercase(),
            port,
        },
    };
    Ok(Target { place, tls })
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
    /// For `https://` targets.
    tls: Option<ClientTls>,
}

impl Follower {
    async fn run(mut self, mut events: mpsc::Receiver<(SocketAddr, State)>) {
        let has_names = self
            .address
            .targets
            .iter()
            .any(|target| matches!(target.place, Place::Name { .. }));
        let mut resolve = tokio::time::interval(RESOLVE_INTERVAL);
        resolve.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tls_changes = self.tls.as_ref().map(|tls| tls.current.clone());
        loop {
            let tls_changed = async {
                match tls_changes.as_mut() {
                    Some(changes) => changes.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            let mut changes = Vec::new();
            tokio::select! {
                // Every clone of the channel is gone: nobody needs the replicas.
                () = self.changes.closed() => return,
                _ = resolve.tick(), if has_names => self.resolve().await,
                Some((replica, state)) = events.recv() => {
                    if let Some(known) = self.states.get_mut(&replica) {
                        *known = state;
                    }
                }
                changed = tls_changed => match changed {
                    true => changes = self.renewed_members(),
                    false => tls_changes = None,
                },
            }
            self.publish_health();
            changes.extend(self.membership_changes());
            for change in changes {
                if self.changes.send(change).await.is_err() {
                    return;
                }
            }
        }
    }

    fn add_literal_addresses(&mut self) {
        for (index, target) in self.address.targets.clone().iter().enumerate() {
            if let Place::Ip(address) = target.place {
                self.set_addresses(index, BTreeSet::from([address]));
            }
        }
        self.publish_health();
    }

    /// Looks every name up again; a name that cannot be resolved now keeps the
    /// addresses it had.
    async fn resolve(&mut self) {
        for (index, target) in self.address.targets.clone().iter().enumerate() {
            let Place::Name { host, port } = &target.place else {
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
                self.probes.start(
                    *replica,
                    origin.clone(),
                    self.tls.clone(),
                    self.events.clone(),
                );
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
            changes.extend(self.insert(member));
        }
        self.members = wanted;
        changes
    }

    /// The TLS files changed: every TLS member again, so new connections use
    /// them. The balancer swaps each one for its new endpoint once that is
    /// ready; calls in flight finish on the connections they began on.
    fn renewed_members(&self) -> Vec<Change<Member, Endpoint>> {
        self.members
            .iter()
            .filter(|member| self.origin(member).scheme_str() == Some("https"))
            .filter_map(|member| self.insert(member))
            .collect()
    }

    fn origin(&self, member: &Member) -> Uri {
        match member {
            Member::Replica(replica) => self.origins[replica].clone(),
            Member::Name(index) => self.address.targets[*index].origin(),
        }
    }

    /// The balancer's endpoint for `member`: the replica's address under its
    /// target's origin, over TLS checked against the origin's host if https.
    fn insert(&self, member: &Member) -> Option<Change<Member, Endpoint>> {
        let origin = self.origin(member);
        let endpoint = match member {
            Member::Replica(replica) => {
                let scheme = origin.scheme_str().unwrap_or("http");
                let uri: Uri = format!("{scheme}://{replica}")
                    .parse()
                    .expect("an address makes a URI");
                Endpoint::from(uri).origin(origin.clone())
            }
            Member::Name(_) => Endpoint::from(origin.clone()),
        };
        match secured(endpoint, &origin, self.tls.as_ref()) {
            Ok(endpoint) => Some(Change::Insert(member.clone(), configured(endpoint))),
            Err(error) => {
                // The files were checked when read and the host when parsed.
                tracing::error!(upstream = %origin, error = %error_chain(&error), "cannot set up tls for upstream");
                None
            }
        }
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
        tls: Option<ClientTls>,
        events: mpsc::Sender<(SocketAddr, State)>,
    ) {
        let probe = Probe {
            replica,
            origin,
            tls,
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
    /// Read at each new connection, so it follows the files.
    tls: Option<ClientTls>,
    events: mpsc::Sender<(SocketAddr, State)>,
    state: State,
}

impl Probe {
    async fn run(mut self) {
        loop {
            match ProbeConnection::open(self.replica, &self.origin, self.tls.as_ref()).await {
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

/// An HTTP/2 connection to one replica, for its health only, over TLS as calls
/// are.
struct ProbeConnection {
    health: HealthClient<Channel>,
    /// Told when the connection's socket is dropped: the connection is over.
    closed: Arc<Notify>,
}

impl ProbeConnection {
    async fn open(
        replica: SocketAddr,
        origin: &Uri,
        tls: Option<&ClientTls>,
    ) -> Result<Self, BoxError> {
        let scheme = origin.scheme_str().unwrap_or("http");
        let uri: Uri = format!("{scheme}://{replica}").parse()?;
        let endpoint = secured(
            Endpoint::from(uri)
                .origin(origin.clone())
                .connect_timeout(CONNECT_TIMEOUT),
            origin,
            tls,
        )?;
        let closed = Arc::new(Notify::new());
        let told = closed.clone();
        // tonic's own connector, but with a socket that says when it is dropped.
        let connector = tower::service_fn(move |_: Uri| {
            let closed = told.clone();
            async move {
                let stream = TcpStream::connect(replica).await?;
                stream.set_nodelay(true)?;
                Ok::<_, io::Error>(ClosingSocket {
                    io: TokioIo::new(stream),
                    closed,
                })
            }
        });
        let channel =
            tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect_with_connector(connector))
                .await
                .map_err(|_| "connect timed out")?
                .map_err(|error| error_chain(&error))?;
        Ok(Self {
            health: HealthClient::new(channel),
            closed,
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
        self.closed.notified().await;
    }
}

/// A probe's TCP socket, which tells when the connection over it is dropped.
struct ClosingSocket {
    io: TokioIo<TcpStream>,
    closed: Arc<Notify>,
}

impl Drop for ClosingSocket {
    fn drop(&mut self) {
        self.closed.notify_one();
    }
}

impl hyper::rt::Read for ClosingSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for ClosingSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}

/// How this process reaches services at `https://` URLs. Without any of these,
/// it trusts the Mozilla roots and presents no certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct UpstreamTlsArgs {
    /// PEM bundle of the CAs that issue the services' certificates, trusted for
    /// https:// upstream URLs instead of the Mozilla roots. Read again when it
    /// changes.
    #[arg(long, env = "UPSTREAM_CA_FILE", value_parser = path_or_empty())]
    pub upstream_ca_file: Option<PathBuf>,
    /// PEM certificate chain (leaf first) this process presents to https://
    /// upstreams, for mutual TLS; with UPSTREAM_KEY_FILE. Read again when it
    /// changes.
    #[arg(long, env = "UPSTREAM_CERT_FILE", value_parser = path_or_empty())]
    pub upstream_cert_file: Option<PathBuf>,
    /// PEM private key of that certificate (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "UPSTREAM_KEY_FILE", value_parser = path_or_empty())]
    pub upstream_key_file: Option<PathBuf>,
}

/// A path, where an empty value (`${UPSTREAM_CA_FILE:-}` in a compose file)
/// stands for none instead of being refused.
pub(crate) fn path_or_empty() -> impl clap::builder::TypedValueParser<Value = PathBuf> {
    use clap::builder::TypedValueParser as _;
    clap::builder::OsStringValueParser::new().map(PathBuf::from)
}

impl UpstreamTlsArgs {
    /// The settings as the environment gives them, for a process that installed
    /// none.
    fn from_env() -> Self {
        let path = |name| {
            std::env::var_os(name)
                .filter(|value| !value.is_empty())
                .map(PathBuf::from)
        };
        Self {
            upstream_ca_file: path("UPSTREAM_CA_FILE"),
            upstream_cert_file: path("UPSTREAM_CERT_FILE"),
            upstream_key_file: path("UPSTREAM_KEY_FILE"),
        }
    }

    /// Whether any file is named; an empty value (`${UPSTREAM_CA_FILE:-}` in a
    /// compose file) names none.
    pub fn is_set(&self) -> bool {
        self.files().is_ok_and(|files| files != TlsFiles::default())
    }

    fn files(&self) -> Result<TlsFiles, UpstreamTlsError> {
        let given =
            |path: &Option<PathBuf>| path.clone().filter(|path| !path.as_os_str().is_empty());
        let identity = match (
            given(&self.upstream_cert_file),
            given(&self.upstream_key_file),
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => return Err(UpstreamTlsError::CertificateWithoutKey),
        };
        Ok(TlsFiles {
            ca: given(&self.upstream_ca_file),
            identity,
        })
    }
}

/// The upstream TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamTlsError {
    #[error("UPSTREAM_CERT_FILE and UPSTREAM_KEY_FILE go together: set both or neither")]
    CertificateWithoutKey,
    #[error(transparent)]
    File(#[from] PemFileError),
    #[error("other upstream TLS settings are already in use in this process")]
    AlreadyInstalled,
}

/// The upstream TLS settings of this process, and what they were read from.
static PROCESS_TLS: Mutex<Option<(UpstreamTlsArgs, ClientTls)>> = Mutex::new(None);

fn process_tls_slot() -> std::sync::MutexGuard<'static, Option<(UpstreamTlsArgs, ClientTls)>> {
    PROCESS_TLS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Makes `args` the upstream TLS settings of this process: a binary calls it once
/// at start-up, before it makes any upstream. The files are read now (an error
/// names the one at fault) and then looked at every `reload_every`, and read again
/// on SIGHUP. Settings naming no file change nothing. Without a call, the first
/// `https://` upstream takes the settings from the environment.
///
/// The settings are the process's rather than each channel's because the
/// certificate a process presents is its identity, the same towards every
/// service; this way no constructor between `main` and a channel carries them.
pub fn install_tls(args: &UpstreamTlsArgs, reload_every: Duration) -> Result<(), UpstreamTlsError> {
    if !args.is_set() {
        return Ok(());
    }
    let mut slot = process_tls_slot();
    match &*slot {
        Some((installed, _)) if installed == args => Ok(()),
        Some(_) => Err(UpstreamTlsError::AlreadyInstalled),
        None => {
            let tls = ClientTls::load(args.files()?, reload_every, true)?;
            *slot = Some((args.clone(), tls));
            Ok(())
        }
    }
}

/// The upstream TLS of this process: the installed one, or else the one the
/// environment describes.
fn process_tls() -> Result<ClientTls, UpstreamTlsError> {
    let mut slot = process_tls_slot();
    if let Some((_, tls)) = &*slot {
        return Ok(tls.clone());
    }
    let args = UpstreamTlsArgs::from_env();
    let reload_every = std::env::var("TLS_RELOAD_SECS")
        .ok()
        .and_then(|secs| secs.parse().ok())
        .filter(|secs| (1..=3600).contains(secs))
        .map_or(TLS_RELOAD_INTERVAL, Duration::from_secs);
    let tls = ClientTls::load(args.files()?, reload_every, true)?;
    *slot = Some((args, tls.clone()));
    Ok(tls)
}

/// The files the TLS of `https://` upstreams is made of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct TlsFiles {
    ca: Option<PathBuf>,
    /// The certificate and its key.
    identity: Option<(PathBuf, PathBuf)>,
}

impl TlsFiles {
    fn paths(&self) -> Vec<&Path> {
        let identity = self
            .identity
            .iter()
            .flat_map(|(cert, key)| [cert.as_path(), key.as_path()]);
        self.ca.as_deref().into_iter().chain(identity).collect()
    }

    /// The TLS configuration the files make, without a server name yet.
    fn client_config(&self) -> Result<ClientTlsConfig, UpstreamTlsError> {
        let mut config = ClientTlsConfig::new().timeout(CONNECT_TIMEOUT);
        config = match &self.ca {
            Some(path) => {
                let pem = pem_files::roots("UPSTREAM_CA_FILE", path)?.text;
                config.ca_certificate(Certificate::from_pem(pem))
            }
            None => config.with_webpki_roots(),
        };
        if let Some((cert, key)) = &self.identity {
            let chain = pem_files::certificates("UPSTREAM_CERT_FILE", cert)?.text;
            let key_pem = pem_files::private_key("UPSTREAM_KEY_FILE", key)?.text;
            config = config.identity(Identity::from_pem(chain, key_pem));
            // What tonic would otherwise find only at the first connection.
            Endpoint::from_static("https://upstream.invalid")
                .tls_config(config.clone())
                .map_err(|error| {
                    pem_files::invalid(
                        "UPSTREAM_KEY_FILE",
                        key,
                        format_args!(
                            "cannot be used with the certificate in {}: {}",
                            cert.display(),
                            error_chain(&error)
                        ),
                    )
                })?;
        }
        Ok(config)
    }
}

/// The TLS of `https://` upstreams as the files held when last read. Clones share
/// it; while one lives, the files are followed.
#[derive(Clone)]
pub(crate) struct ClientTls {
    current: watch::Receiver<ClientTlsConfig>,
}

impl ClientTls {
    /// Reads the files now; with any file named, follows them every
    /// `reload_every` (and on SIGHUP, with `on_hangup`) for as long as a clone
    /// lives, so it needs a Tokio runtime.
    fn load(
        files: TlsFiles,
        reload_every: Duration,
        on_hangup: bool,
    ) -> Result<Self, UpstreamTlsError> {
        let followed = Followed::now(files.paths());
        let (sender, current) = watch::channel(files.client_config()?);
        if !files.paths().is_empty() {
            tokio::spawn(followed.follow(reload_every, on_hangup, move |cause| {
                if sender.is_closed() {
                    return false;
                }
                let Some(cause) = cause else {
                    return true;
                };
                match files.client_config() {
                    Ok(config) => {
                        sender.send_replace(config);
                        tracing::info!(
                            cause,
                            "upstream tls files reloaded; new connections use them"
                        );
                    }
                    Err(error) => tracing::warn!(
                        cause,
                        %error,
                        "upstream tls reload failed; keeping the previous certificates"
                    ),
                }
                true
            }));
        }
        Ok(Self { current })
    }

    /// The configuration for a connection to `server_name`, as the files hold now.
    fn for_server(&self, server_name: &str) -> ClientTlsConfig {
        self.current.borrow().clone().domain_name(server_name)
    }
}

/// `endpoint` over TLS, checked against the host of `origin`, when `origin` is
/// `https://`; unchanged otherwise.
fn secured(
    endpoint: Endpoint,
    origin: &Uri,
    tls: Option<&ClientTls>,
) -> Result<Endpoint, tonic::transport::Error> {
    match (origin.scheme_str(), tls) {
        (Some("https"), Some(tls)) => {
            let host = origin.host().unwrap_or_default();
            let host = host.trim_start_matches('[').trim_end_matches(']');
            endpoint.tls_config(tls.for_server(host))
        }
        _ => Ok(endpoint),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    };

    use tonic::service::interceptor::InterceptedService;

    use super::*;

    fn ip(address: &str) -> Target {
        Target {
            place: Place::Ip(address.parse().unwrap()),
            tls: false,
        }
    }

    fn name(host: &str, port: u16) -> Target {
        Target {
            place: Place::Name {
                host: host.to_owned(),
                port,
            },
            tls: false,
        }
    }

    fn over_tls(target: Target) -> Target {
        Target {
            tls: true,
            ..target
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
            (
                "https://10.0.0.1:50053,https://posts-service:50053",
                vec![
                    over_tls(ip("10.0.0.1:50053")),
                    over_tls(name("posts-service", 50053)),
                ],
            ),
            ("https://localhost", vec![over_tls(name("localhost", 443))]),
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
            ("ftp://10.0.0.1:50053", "only http:// and https://"),
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

    /// A CA of the test's own, the certificates it issues, and a folder for their
    /// PEM files, removed at the end.
    struct Pki {
        ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
        dir: PathBuf,
    }

    /// A certificate with its key.
    struct Leaf {
        cert: String,
        key: String,
        der: Vec<u8>,
    }

    impl Pki {
        fn new() -> Self {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "agora test ca");
            params.key_usages = vec![
                rcgen::KeyUsagePurpose::KeyCertSign,
                rcgen::KeyUsagePurpose::DigitalSignature,
            ];
            let ca =
                rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
                    .unwrap();
            let dir = std::env::temp_dir().join(format!(
                "agora-upstream-tls-{}",
                uuid::Uuid::now_v7().simple()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Self { ca, dir }
        }

        /// A certificate for `names` (DNS names or IP addresses), for a server or
        /// a client.
        fn issue(&self, names: &[&str]) -> Leaf {
            let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
            let mut params = rcgen::CertificateParams::new(names).unwrap();
            params.extended_key_usages = vec![
                rcgen::ExtendedKeyUsagePurpose::ServerAuth,
                rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.ca).unwrap();
            Leaf {
                cert: cert.pem(),
                key: key.serialize_pem(),
                der: cert.der().to_vec(),
            }
        }

        fn file(&self, name: &str, contents: &str) -> PathBuf {
            let path = self.dir.join(name);
            std::fs::write(&path, contents).unwrap();
            path
        }

        fn ca_file(&self) -> PathBuf {
            self.file("ca.pem", &self.ca.pem())
        }

        /// Files for a client presenting `leaf` and trusting this CA.
        fn client_files(&self, leaf: &Leaf) -> TlsFiles {
            TlsFiles {
                ca: Some(self.ca_file()),
                identity: Some((
                    self.file("client.pem", &leaf.cert),
                    self.file("client-key.pem", &leaf.key),
                )),
            }
        }
    }

    impl Drop for Pki {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A replica serving health over mutual TLS with `server`, accepting client
    /// certificates from `clients`; it keeps the client certificate of every call
    /// the tests make (marked `x-test`).
    struct TlsReplica {
        address: SocketAddr,
        peers: Arc<Mutex<Vec<Vec<u8>>>>,
        reporter: tonic_health::server::HealthReporter,
        _stop: tokio::sync::oneshot::Sender<()>,
    }

    impl TlsReplica {
        async fn start(server: &Leaf, clients: &Pki) -> Self {
            let listener = tokio::net::TcpListener::bind(loopback()).await.unwrap();
            let address = listener.local_addr().unwrap();
            let (reporter, health) = tonic_health::server::health_reporter();
            let peers = Arc::new(Mutex::new(Vec::new()));
            let seen = peers.clone();
            let health = InterceptedService::new(health, move |request: tonic::Request<()>| {
                if request.metadata().contains_key("x-test") {
                    let certs = request.peer_certs().expect("a client certificate");
                    seen.lock().unwrap().push(certs[0].to_vec());
                }
                Ok(request)
            });
            let tls = tonic::transport::ServerTlsConfig::new()
                .identity(Identity::from_pem(&server.cert, &server.key))
                .client_ca_root(Certificate::from_pem(clients.ca.pem()));
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(
                tonic::transport::Server::builder()
                    .tls_config(tls)
                    .unwrap()
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
                peers,
                reporter,
                _stop: stop,
            }
        }

        fn last_peer(&self) -> Option<Vec<u8>> {
            self.peers.lock().unwrap().last().cloned()
        }
    }

    fn tls_upstream(setting: &str, files: TlsFiles) -> Upstream {
        let tls =
            ClientTls::load(files, Duration::from_millis(100), false).expect("the files load");
        Upstream::follow(setting.parse().unwrap(), Some(tls))
    }

    #[tokio::test]
    async fn an_https_upstream_checks_the_servers_certificate_and_presents_its_own() {
        let pki = Pki::new();
        let client = pki.issue(&["posts-service"]);
        let replica = TlsReplica::start(&pki.issue(&["localhost", "127.0.0.1"]), &pki).await;
        let port = replica.address.port();

        // By address, the certificate is checked for the address; by name, for
        // the name, though connections go to the addresses it resolves to.
        for setting in [
            format!("https://127.0.0.1:{port}"),
            format!("https://localhost:{port}"),
        ] {
            let upstream = tls_upstream(&setting, pki.client_files(&client));
            let mut health = upstream.health.clone();
            tokio::time::timeout(
                Duration::from_secs(10),
                health.wait_for(|h| h.states.contains_key(&replica.address) && h.all_answered()),
            )
            .await
            .unwrap_or_else(|_| panic!("{setting}: probed in time"))
            .unwrap();

            assert!(upstream.any_replica_serving().await, "{setting}");
            assert_eq!(failed_checks(&upstream, 20).await, 0, "{setting}");
            assert_eq!(
                replica.last_peer(),
                Some(client.der.clone()),
                "{setting}: the client certificate is presented"
            );
        }
    }

    #[tokio::test]
    async fn a_server_the_ca_does_not_vouch_for_and_a_client_without_a_certificate_get_nowhere() {
        let (pki, stranger) = (Pki::new(), Pki::new());
        let client = pki.issue(&["posts-service"]);
        let unknown_issuer = TlsReplica::start(&stranger.issue(&["127.0.0.1"]), &pki).await;
        let other_name = TlsReplica::start(&pki.issue(&["elsewhere.test"]), &pki).await;
        let mutual = TlsReplica::start(&pki.issue(&["127.0.0.1"]), &pki).await;
        let without_certificate = TlsFiles {
            ca: Some(pki.ca_file()),
            identity: None,
        };
        let cases = [
            (
                &unknown_issuer,
                pki.client_files(&client),
                "a server certificate from another CA",
            ),
            (
                &other_name,
                pki.client_files(&client),
                "a server certificate for another name",
            ),
            (
                &mutual,
                without_certificate,
                "no client certificate for a mutual TLS server",
            ),
        ];
        for (replica, files, case) in cases {
            let upstream = tls_upstream(&format!("https://{}", replica.address), files);
            settled(&upstream).await;

            assert!(!upstream.any_replica_serving().await, "{case}");
            assert_eq!(failed_checks(&upstream, 3).await, 3, "{case}");
        }
    }

    #[tokio::test]
    async fn rotated_files_serve_new_connections_while_calls_in_flight_go_on() {
        let pki = Pki::new();
        let (before, after) = (pki.issue(&["client-a"]), pki.issue(&["client-b"]));
        let replica = TlsReplica::start(&pki.issue(&["127.0.0.1"]), &pki).await;
        let files = pki.client_files(&before);
        let upstream = tls_upstream(&format!("https://{}", replica.address), files.clone());
        settled(&upstream).await;
        assert_eq!(failed_checks(&upstream, 5).await, 0);
        assert_eq!(replica.last_peer(), Some(before.der.clone()));
        // A call that stays open: a health watch.
        replica
            .reporter
            .set_service_status("agora.test.Rotation", tonic_health::ServingStatus::Serving)
            .await;
        let mut watch = HealthClient::new(upstream.channel())
            .watch(HealthCheckRequest {
                service: "agora.test.Rotation".to_owned(),
            })
            .await
            .expect("the watch opens")
            .into_inner();
        assert_eq!(
            watch.message().await.unwrap().unwrap().status(),
            ServingStatus::Serving
        );

        let (cert, key) = files.identity.as_ref().unwrap();
        std::fs::write(cert, &after.cert).unwrap();
        std::fs::write(key, &after.key).unwrap();
        let rotated = async {
            while replica.last_peer() != Some(after.der.clone()) {
                assert_eq!(failed_checks(&upstream, 1).await, 0, "no call fails");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), rotated)
            .await
            .expect("new connections present the new certificate");

        replica
            .reporter
            .set_service_status(
                "agora.test.Rotation",
                tonic_health::ServingStatus::NotServing,
            )
            .await;
        let update = tokio::time::timeout(Duration::from_secs(5), watch.message())
            .await
            .expect("the call begun before goes on")
            .expect("on its connection")
            .expect("with a message");
        assert_eq!(update.status(), ServingStatus::NotServing);
    }

    #[tokio::test]
    async fn a_reload_that_fails_keeps_the_files_read_before() {
        let pki = Pki::new();
        let files = pki.client_files(&pki.issue(&["client-a"]));
        let tls = ClientTls::load(files.clone(), Duration::from_millis(50), false).unwrap();
        let mut current = tls.current.clone();
        current.mark_unchanged();

        let (cert, key) = files.identity.as_ref().unwrap();
        std::fs::write(key, "not a key").unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!current.has_changed().unwrap(), "the old files stay in use");

        let renewed = pki.issue(&["client-b"]);
        std::fs::write(cert, &renewed.cert).unwrap();
        std::fs::write(key, &renewed.key).unwrap();
        tokio::time::timeout(Duration::from_secs(5), current.changed())
            .await
            .expect("good files are taken once they are there")
            .unwrap();
    }

    #[test]
    fn bad_files_are_refused_naming_the_setting_and_the_file() {
        let pki = Pki::new();
        let (leaf, other) = (pki.issue(&["client"]), pki.issue(&["other"]));
        let ca = pki.ca_file();
        let cert = pki.file("cert.pem", &leaf.cert);
        let key = pki.file("key.pem", &leaf.key);
        let other_key = pki.file("other-key.pem", &other.key);
        let garbage = pki.file("garbage.pem", "not pem at all\n");
        let missing = pki.dir.join("missing.pem");
        let files = |ca: &PathBuf, identity: Option<(&PathBuf, &PathBuf)>| TlsFiles {
            ca: Some(ca.clone()),
            identity: identity.map(|(cert, key)| (cert.clone(), key.clone())),
        };
        let cases = [
            (
                files(&missing, None),
                "cannot read UPSTREAM_CA_FILE",
                &missing,
            ),
            (files(&garbage, None), "UPSTREAM_CA_FILE", &garbage),
            (
                files(&ca, Some((&garbage, &key))),
                "UPSTREAM_CERT_FILE",
                &garbage,
            ),
            (
                files(&ca, Some((&cert, &missing))),
                "cannot read UPSTREAM_KEY_FILE",
                &missing,
            ),
            (
                files(&ca, Some((&cert, &cert))),
                "no unencrypted private key",
                &cert,
            ),
            (
                files(&ca, Some((&cert, &other_key))),
                "cannot be used with the certificate",
                &other_key,
            ),
        ];
        for (files, expected, path) in cases {
            let error = files
                .client_config()
                .expect_err(&format!("{files:?} is refused"))
                .to_string();
            assert!(error.contains(expected), "{files:?}: {error}");
            assert!(
                error.contains(&path.display().to_string()),
                "{files:?}: {error} names the file"
            );
        }
        let half = UpstreamTlsArgs {
            upstream_cert_file: Some(cert),
            ..UpstreamTlsArgs::default()
        };
        assert!(matches!(
            half.files(),
            Err(UpstreamTlsError::CertificateWithoutKey)
        ));
        let empty = UpstreamTlsArgs {
            upstream_ca_file: Some(PathBuf::new()),
            ..UpstreamTlsArgs::default()
        };
        assert!(!empty.is_set(), "an empty value names no file");
    }
}
