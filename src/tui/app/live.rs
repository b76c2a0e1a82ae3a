//! Live panes: when the engine says the store changed (its own job ended, or another process
//! — a second console, `clawback watch`, `clawback retract` — did something), the panes that
//! show that part are reloaded without a key press. A pane never loaded stays so (it loads when
//! shown); a reload keeps what is on screen until the answer arrives, so nothing flickers.

use super::{App, Loadable};
use crate::engine::Command;
use crate::engine::event::StoreChanges;
use crate::engine::view::AuditFilter;

impl App {
    /// The commands that reload what `changes` made stale.
    pub(super) fn reload_changed(&mut self, changes: StoreChanges) -> Vec<Command> {
        let mut commands = Vec::new();
        let work = changes.jobs || changes.items;
        if work {
            if self.jobs.list.ready().is_some() {
                commands.push(Command::LoadJobs);
            }
            if let Some((job, _)) = &self.jobs.outcomes {
                commands.push(Command::LoadJobOutcomes { job: job.clone() });
            }
            if !matches!(self.metrics.snapshot, Loadable::NotLoaded) {
                commands.push(Command::LoadMetrics {
                    window: self.metrics.window,
                });
            }
            if self.metrics.details.is_some() {
                commands.push(Command::LoadMetricsDetails {
                    window: self.metrics.window,
                });
            }
        }
        if changes.audit && !matches!(self.audit.entries, Loadable::NotLoaded) {
            commands.push(Command::LoadAudit {
                filter: AuditFilter {
                    text: self.audit.filter.clone(),
                },
            });
            // A verification of fewer entries must not stand beside the new list: verify again
            // (the line says "verifying..." until the answer, which follows the list at once).
            if !matches!(self.audit.verification, Loadable::NotLoaded) {
                self.audit.verification = Loadable::Loading;
                commands.push(Command::VerifyAudit);
            }
        }
        // Every policy save is audited: another process's save shows, unless the operator has
        // unsaved changes here (they are never overwritten; saving then says the version moved).
        if changes.audit
            && self.policy.loaded.ready().is_some()
            && !self.policy.saving
            && !self.policy_modified()
        {
            commands.push(Command::LoadPolicy);
        }
        // Search rows carry each message's retraction state; new mail may match the query.
        let search_idle = !self.search.editing && self.search.debounce.is_none();
        if (work || changes.trace) && search_idle && self.search.results.ready().is_some() {
            self.search.generation += 1;
            commands.push(Command::Search {
                generation: self.search.generation,
                query: self.search.query.value().to_string(),
                limit: super::SEARCH_LIMIT,
            });
        }
        // Last outcomes per recipient: reloaded when a job starts or ends, not on every item
        // (a load asks the provider about each mailbox).
        let recipients_shown = matches!(
            self.recipients.rows,
            Loadable::Ready(_) | Loadable::Failed(_)
        );
        if changes.jobs && recipients_shown {
            commands.extend(self.recipients.load_again());
        }
        if !commands.is_empty() {
            self.dirty = true;
        }
        commands
    }
}
