//! A cheap fingerprint of what the front ends show from the store (jobs, their items, the
//! audit chain, the trace), so an engine can notice changes another process made — a second
//! console, `clawback watch`, `clawback retract` — and refresh the panes without a key press.

use super::{Store, StoreError};

/// What the store looked like at one moment, in one small query. Two stamps differ in a
/// field exactly when that part of the store changed in between (rows are only added or
/// moved forward: jobs get new ids or states, items settle, audit entries are appended).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeStamp {
    /// Newest job id and the `id:state` of every unfinished job.
    pub jobs: (i64, String),
    /// Newest item settle time (unix seconds) and how many items settled in that second.
    pub items: (i64, i64),
    /// Newest audit position.
    pub audit: i64,
    /// Newest trace row and newest retraction recorded on the trace.
    pub trace: (i64, i64),
}

impl Store {
    /// The current [`ChangeStamp`]. Every part is an index lookup except the unfinished jobs,
    /// which are few.
    pub fn change_stamp(&self) -> Result<ChangeStamp, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::stamp::change_stamp(pg);
        }
        let mut stmt = self.conn()?.prepare_cached(
            "SELECT \
               (SELECT COALESCE(MAX(id), 0) FROM job), \
               (SELECT COALESCE(group_concat(id || ':' || state), '') FROM job \
                  WHERE state <> 'finished'), \
               (SELECT COALESCE(MAX(finished_at), 0) FROM job_item), \
               (SELECT COUNT(*) FROM job_item WHERE finished_at = \
                  (SELECT MAX(finished_at) FROM job_item)), \
               (SELECT COALESCE(MAX(pos), 0) FROM audit), \
               (SELECT COALESCE(MAX(id), 0) FROM trace), \
               (SELECT COALESCE(MAX(retracted_at), 0) FROM trace WHERE retracted_at IS NOT NULL)",
        )?;
        let stamp = stmt.query_row([], |r| {
            Ok(ChangeStamp {
                jobs: (r.get(0)?, r.get(1)?),
                items: (r.get(2)?, r.get(3)?),
                audit: r.get(4)?,
                trace: (r.get(5)?, r.get(6)?),
            })
        })?;
        Ok(stamp)
    }
}
