//! The change stamp on PostgreSQL (see `store::stamp`): the same parts, read from the job,
//! audit and trace tables of the other areas by their shared names.

use super::{PgConn, get};
use crate::store::StoreError;
use crate::store::stamp::ChangeStamp;

/// The current [`ChangeStamp`] (unfinished jobs in id order, so that equal stores give equal
/// stamps).
pub fn change_stamp(conn: &PgConn) -> Result<ChangeStamp, StoreError> {
    let r = conn.query_one(
        "SELECT \
           (SELECT COALESCE(MAX(id), 0)::BIGINT FROM job), \
           (SELECT COALESCE(string_agg(id::TEXT || ':' || state, ',' ORDER BY id), '') FROM job \
              WHERE state <> 'finished'), \
           (SELECT COALESCE(MAX(finished_at), 0)::BIGINT FROM job_item), \
           (SELECT COUNT(*) FROM job_item WHERE finished_at = \
              (SELECT MAX(finished_at) FROM job_item)), \
           (SELECT COALESCE(MAX(pos), 0)::BIGINT FROM audit), \
           (SELECT COALESCE(MAX(id), 0)::BIGINT FROM trace), \
           (SELECT COALESCE(MAX(retracted_at), 0)::BIGINT FROM trace \
              WHERE retracted_at IS NOT NULL)",
        &[],
    )?;
    Ok(ChangeStamp {
        jobs: (get(&r, 0)?, get(&r, 1)?),
        items: (get(&r, 2)?, get(&r, 3)?),
        audit: get(&r, 4)?,
        trace: (get(&r, 5)?, get(&r, 6)?),
    })
}
