//! Channels to other Agora services.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// Giving up on an unreachable service quickly turns into UNAVAILABLE, not a hang.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A call to another service that has not answered by then fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A channel that connects on first use and reconnects after failures; HTTP/2
/// multiplexes every call over it.
pub fn lazy_channel(url: &str) -> Result<Channel, tonic::transport::Error> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true)
        .connect_lazy())
}
