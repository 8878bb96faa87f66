//! Writing the exchanges of a gateway call, and counting them in the
//! metrics: one place for both, so that no recorded exchange goes uncounted.
//!
//! A [`Record`] is a call's exchanges waiting to be written in the same
//! transaction as whatever follows them (a recovery point, an outcome, a retry).

use super::{Job, Worker};
use crate::gateways::{Answer, Exchange, ExchangeKind, GatewayCall};
use crate::store::attempts::{self, AttemptKind, Recording};
use crate::store::StoreError;

/// Exchanges to write in the same transaction as what follows them.
pub(super) struct Record {
    pub gateway: &'static str,
    pub attempt_no: i32,
    pub kind: AttemptKind,
    /// The in-flight attempt row the last exchange completes, if one was committed.
    pub in_flight_row: Option<i64>,
    pub exchanges: Vec<Exchange>,
    /// Why no exchange was made, recorded when there is none (the call's error).
    pub error: Option<String>,
}

impl Record {
    /// Splits a call into the record of its exchanges and the answer to decide from.
    pub fn split(
        job: &Job,
        call: GatewayCall,
        attempt_no: i32,
        kind: AttemptKind,
        in_flight_row: Option<i64>,
    ) -> (Record, Answer) {
        let record = Record {
            gateway: job.valid.gateway.name(),
            attempt_no,
            kind,
            in_flight_row,
            exchanges: call.exchanges,
            error: call.answer.error.as_ref().map(|e| e.to_string()),
        };
        (record, call.answer)
    }

    /// Counts the exchanges, and hands them over to be written by a batch.
    pub fn into_recording(self, worker: &Worker, id: &str) -> Recording {
        count_exchanges(worker, &self);
        Recording {
            command_id: id.to_string(),
            attempt_no: self.attempt_no,
            kind: self.kind,
            in_flight_row: self.in_flight_row,
            exchanges: self.exchanges,
            fallback_error: self.error,
        }
    }
}

fn count_exchanges(worker: &Worker, record: &Record) {
    for exchange in &record.exchanges {
        let kind = match exchange.kind {
            ExchangeKind::Auth => AttemptKind::Auth,
            ExchangeKind::Call => record.kind,
        };
        worker
            .metrics
            .exchange(record.gateway, kind.as_str(), exchange);
    }
}

pub(super) async fn write_record(
    worker: &Worker,
    id: &str,
    record: &Record,
) -> Result<(), StoreError> {
    let mut conn = worker.store.pool().acquire().await?;
    write_record_in(worker, &mut conn, id, record).await
}

/// Records the exchanges of a call, and counts them: one place for both.
pub(super) async fn write_record_in(
    worker: &Worker,
    conn: &mut sqlx::PgConnection,
    id: &str,
    record: &Record,
) -> Result<(), StoreError> {
    count_exchanges(worker, record);
    attempts::record(
        conn,
        id,
        record.attempt_no,
        record.kind,
        record.in_flight_row,
        &record.exchanges,
        record.error.as_deref(),
    )
    .await
}
