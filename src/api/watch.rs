//! WatchRevocations on the wire: the service credential from `authorization: Bearer`, and each
//! `WatchEvent` as an `auth.v1.RevocationEvent`. The stream's last item is the status that ended
//! it (UNAVAILABLE: reconnect and reload).

use std::{pin::Pin, sync::Arc, time::Duration};

use tokio::sync::watch;
use tokio_stream::{Stream, StreamExt as _, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use super::{bearer, status, timestamp_ms};
use crate::{
    pb::{self, revocation::Kind, revocation_event::Event},
    service::{AuthService, WatchEvent, WatchedEntry, WatchedRevocation},
};

/// The stream a watcher reads.
pub type RevocationStream = Pin<Box<dyn Stream<Item = Result<pb::RevocationEvent, Status>> + Send>>;

/// Starts a watcher for `request`'s caller; it ends when `draining` turns true.
pub(super) fn watch_revocations(
    service: &Arc<AuthService>,
    request: &Request<pb::WatchRevocationsRequest>,
    draining: watch::Receiver<bool>,
) -> Result<Response<RevocationStream>, Status> {
    let bearer = request
        .metadata()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(bearer::parse);
    let events = service
        .watch_revocations(bearer.as_ref().map(|token| token.expose()), draining)
        .map_err(status::from_service)?;
    let stream = ReceiverStream::new(events).map(|event| match event {
        Ok(event) => Ok(message(event)),
        Err(error) => Err(status::from_service(error)),
    });
    Ok(Response::new(Box::pin(stream)))
}

fn message(event: WatchEvent) -> pb::RevocationEvent {
    let event = match event {
        WatchEvent::Snapshot {
            revocations,
            server_time,
            complete,
            clock_leeway,
            access_token_ttl,
        } => Event::Snapshot(pb::Snapshot {
            revocations: revocations.into_iter().map(revocation).collect(),
            server_time: Some(timestamp_ms(server_time)),
            complete,
            clock_leeway: Some(duration(clock_leeway)),
            access_token_ttl: Some(duration(access_token_ttl)),
        }),
        WatchEvent::Revoked(entry) => Event::Revoked(revocation(entry)),
        WatchEvent::Heartbeat {
            server_time,
            interval,
        } => Event::Heartbeat(pb::Heartbeat {
            server_time: Some(timestamp_ms(server_time)),
            interval: Some(duration(interval)),
        }),
    };
    pb::RevocationEvent { event: Some(event) }
}

fn revocation((what, until): WatchedEntry) -> pb::Revocation {
    let seconds = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
    let (kind, id, issued_before) = match what {
        WatchedRevocation::Token(jti) => (Kind::Token, jti.to_string(), None),
        WatchedRevocation::Session(session) => (Kind::Session, session.to_string(), None),
        WatchedRevocation::UserCutoff(user, before) => {
            (Kind::UserCutoff, user.to_string(), seconds(before))
        }
        WatchedRevocation::GlobalCutoff(before) => {
            (Kind::GlobalCutoff, String::new(), seconds(before))
        }
    };
    pb::Revocation {
        kind: kind.into(),
        id,
        issued_before,
        until: seconds(until),
    }
}

fn duration(duration: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(duration.subsec_nanos()).unwrap_or(0),
    }
}
