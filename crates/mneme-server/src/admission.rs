//! Admission: every call, unary or streaming, runs holding a [`Permit`] — one of
//! [`crate::CONCURRENT_REQUESTS_MAX`] overall and one of
//! [`CONCURRENT_REQUESTS_PER_TENANT_MAX`] for its tenant (its API key; on a server without
//! keys, its agent) — so no tenant can take every slot from the others. A call that finds
//! no permit is refused at once with `RESOURCE_EXHAUSTED` (clients retry with backoff); it
//! never queues unboundedly. Streams also have a deadline (the client's `grpc-timeout`, or
//! [`STREAM_DEADLINE_DEFAULT`]) and an idle timeout ([`STREAM_IDLE_TIMEOUT`]): a client that
//! stops reading or sending loses its stream, and with it the permit.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tonic::metadata::MetadataMap;

/// Calls one tenant may have in flight (a quarter of the server's).
pub const CONCURRENT_REQUESTS_PER_TENANT_MAX: usize = crate::CONCURRENT_REQUESTS_MAX / 4;
/// A stream on which the client neither reads nor sends for this long is ended.
pub const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A stream's deadline when the client sets none.
pub const STREAM_DEADLINE_DEFAULT: Duration = Duration::from_secs(3_600);

/// The server's permits.
#[derive(Debug)]
pub struct Admission {
    global: Arc<Semaphore>,
    tenants: Mutex<HashMap<String, usize>>,
    per_tenant: usize,
}

/// A call's right to run; released when dropped.
#[derive(Debug)]
pub struct Permit {
    _global: OwnedSemaphorePermit,
    tenant: String,
    admission: Arc<Admission>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut tenants = self.admission.tenants.lock();
        if let Some(n) = tenants.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                tenants.remove(&self.tenant);
            }
        }
    }
}

impl Admission {
    /// `total` permits overall, `per_tenant` for each tenant.
    pub fn new(total: usize, per_tenant: usize) -> Arc<Self> {
        Arc::new(Self {
            global: Arc::new(Semaphore::new(total.max(1))),
            tenants: Mutex::new(HashMap::new()),
            per_tenant: per_tenant.max(1),
        })
    }

    /// A permit for `tenant`, or `RESOURCE_EXHAUSTED` at once.
    pub fn admit(self: &Arc<Self>, tenant: &str) -> Result<Permit, Status> {
        {
            let tenants = self.tenants.lock();
            if tenants.get(tenant).copied().unwrap_or(0) >= self.per_tenant {
                return Err(Status::resource_exhausted(format!(
                    "this client has {} calls in flight, the limit per API key or agent \
                     (CONCURRENT_REQUESTS_PER_TENANT_MAX); retry with backoff",
                    self.per_tenant
                )));
            }
        }
        let global = Arc::clone(&self.global).try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(
                "server is at its concurrent request limit (CONCURRENT_REQUESTS_MAX); retry with backoff",
            )
        })?;
        let mut tenants = self.tenants.lock();
        let n = tenants.entry(tenant.to_owned()).or_default();
        if *n >= self.per_tenant {
            return Err(Status::resource_exhausted(format!(
                "this client has {} calls in flight, the limit per API key or agent \
                 (CONCURRENT_REQUESTS_PER_TENANT_MAX); retry with backoff",
                self.per_tenant
            )));
        }
        *n += 1;
        Ok(Permit {
            _global: global,
            tenant: tenant.to_owned(),
            admission: Arc::clone(self),
        })
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.tenants.lock().values().sum()
    }
}

/// The deadline a client asked for with `grpc-timeout` (capped at `max`), or `max`.
pub fn requested_deadline(metadata: &MetadataMap, max: Duration) -> Duration {
    metadata
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map_or(max, |d| d.min(max))
}

/// Parses a `grpc-timeout` value: up to 8 ASCII digits and a unit (H M S m u n).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3_600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_tenant_takes_every_permit_and_permits_come_back() {
        let a = Admission::new(8, 3);
        let mine: Vec<Permit> = (0..3).map(|_| a.admit("greedy").unwrap()).collect();
        assert_eq!(
            a.admit("greedy").unwrap_err().code(),
            tonic::Code::ResourceExhausted
        );
        let others: Vec<Permit> = (0..3).map(|_| a.admit("polite").unwrap()).collect();
        let more: Vec<Permit> = (0..2).map(|i| a.admit(&format!("t{i}")).unwrap()).collect();
        assert_eq!(a.in_flight(), 8);
        assert_eq!(
            a.admit("new").unwrap_err().code(),
            tonic::Code::ResourceExhausted
        );
        drop(mine);
        assert!(a.admit("new").is_ok());
        drop((others, more));
        assert_eq!(a.in_flight(), 0);
    }

    #[test]
    fn grpc_timeouts_parse_and_garbage_does_not() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3_600)));
        for bad in ["", "5", "m", "123456789S", "-1S", "1x", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }
}
