//! `grpc.health.v1.Health`, served by Mneme itself so that it uses the strict codec (an
//! undecodable request is `INVALID_ARGUMENT`, as everywhere else) and takes a permit like
//! every other call; `Watch` streams also have a deadline. Health needs no API key: it says
//! only whether the server serves.

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::admission::{Admission, STREAM_DEADLINE_DEFAULT, requested_deadline};
use crate::hpb;
use crate::hpb::health_check_response::ServingStatus;

/// The services whose status is reported ("" is the server as a whole).
pub const SERVICES: [&str; 3] = ["", "mneme.v1.MemoryService", "mneme.v1.AdminService"];

/// Sets the status every health call reports.
#[derive(Debug, Clone)]
pub struct HealthReporter(Arc<watch::Sender<bool>>);

impl HealthReporter {
    /// Reports serving (`true`) or not serving.
    pub fn set_serving(&self, serving: bool) {
        self.0.send_replace(serving);
    }
}

/// The health service.
#[derive(Debug, Clone)]
pub struct HealthApi {
    serving: watch::Receiver<bool>,
    admission: Arc<Admission>,
}

/// A new health service (serving) and its reporter.
pub fn health(admission: Arc<Admission>) -> (HealthReporter, HealthApi) {
    let (tx, rx) = watch::channel(true);
    (
        HealthReporter(Arc::new(tx)),
        HealthApi {
            serving: rx,
            admission,
        },
    )
}

fn status_of(serving: bool) -> ServingStatus {
    if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

impl HealthApi {
    fn known(service: &str) -> Result<(), Status> {
        if SERVICES.contains(&service) {
            Ok(())
        } else {
            Err(Status::not_found(format!(
                "unknown service {}",
                mneme_engine::limits::echo(service)
            )))
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<hpb::HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl hpb::health_server::Health for HealthApi {
    async fn check(
        &self,
        request: Request<hpb::HealthCheckRequest>,
    ) -> Result<Response<hpb::HealthCheckResponse>, Status> {
        let _permit = self.admission.admit("health")?;
        Self::known(&request.get_ref().service)?;
        Ok(Response::new(hpb::HealthCheckResponse {
            status: status_of(*self.serving.borrow()) as i32,
        }))
    }

    async fn list(
        &self,
        _request: Request<hpb::HealthListRequest>,
    ) -> Result<Response<hpb::HealthListResponse>, Status> {
        let _permit = self.admission.admit("health")?;
        let status = status_of(*self.serving.borrow()) as i32;
        Ok(Response::new(hpb::HealthListResponse {
            statuses: SERVICES
                .iter()
                .map(|s| ((*s).to_owned(), hpb::HealthCheckResponse { status }))
                .collect(),
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<hpb::HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let permit = self.admission.admit("health")?;
        let deadline = tokio::time::Instant::now()
            + requested_deadline(request.metadata(), STREAM_DEADLINE_DEFAULT);
        let service = request.into_inner().service;
        let known = SERVICES.contains(&service.as_str());
        let mut rx = self.serving.clone();
        let (tx, out) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let _permit = permit;
            loop {
                let status = if known {
                    status_of(*rx.borrow_and_update())
                } else {
                    ServingStatus::ServiceUnknown
                };
                let sent = tokio::time::timeout_at(
                    deadline,
                    tx.send(Ok(hpb::HealthCheckResponse {
                        status: status as i32,
                    })),
                )
                .await;
                if !matches!(sent, Ok(Ok(()))) {
                    return;
                }
                match tokio::time::timeout_at(deadline, rx.changed()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return,
                    Err(_) => {
                        let _ = tx.try_send(Err(Status::deadline_exceeded(
                            "health watch reached its deadline; watch again",
                        )));
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out),
        )))
    }
}
