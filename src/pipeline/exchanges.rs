//! Writing the exchanges of a gateway call, and counting them in the
//! metrics: one place for both, so that no recorded exchange goes uncounted.
//!
//! A [`Record`] is a call's exchanges waiting to be written in the same
//! transaction as whatever follows them (a recovery point, an outcome, a retry).

use super::Worker;
use crate::gateways::GatewayCall;
use crate::store::attempts::{self, AttemptKind};
use crate::store::StoreError;

/// Exchanges to write in the same transaction as what follows them.
pub(super) struct Record<'a> {
    pub gateway: &'static str,
    pub attempt_no: i32,
    pub kind: AttemptKind,
    pub in_flight_row: Option<i64>,
    pub call: &'a GatewayCall,
}

pub(super) fn recording_of(id: &str, record: &Record<'_>) -> crate::store::attempts::Recording {
    crate::store::attempts::Recording {
        command_id: id.to_string(),
        attempt_no: record.attempt_no,
        kind: record.kind,
        in_flight_row: record.in_flight_row,
        exchanges: record.call.exchanges.clone(),
        fallback_error: record.call.answer.error.as_ref().map(|e| e.to_string()),
    }
}

pub(super) fn count_exchanges(w: &Worker, record: &Record<'_>) {
    for exchange in &record.call.exchanges {
        let kind = if exchange.purpose == "authToken" {
            AttemptKind::Auth
        } else {
            record.kind
        };
        w.metrics.exchange(record.gateway, kind.as_str(), exchange);
    }
}

pub(super) async fn write_record(
    w: &Worker,
    id: &str,
    record: &Record<'_>,
) -> Result<(), StoreError> {
    let mut conn = w.store.pool().acquire().await?;
    write_record_in(w, &mut conn, id, record).await
}

/// Records the exchanges of a call, and counts them: one place for both.
pub(super) async fn write_record_in(
    w: &Worker,
    conn: &mut sqlx::PgConnection,
    id: &str,
    record: &Record<'_>,
) -> Result<(), StoreError> {
    count_exchanges(w, record);
    let error = record.call.answer.error.as_ref().map(|e| e.to_string());
    attempts::record(
        conn,
        id,
        record.attempt_no,
        record.kind,
        record.in_flight_row,
        &record.call.exchanges,
        error.as_deref(),
    )
    .await
}
