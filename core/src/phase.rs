//! The phase of an ImportJob (`status.phase`): written by the operator, read by the API and
//! by anyone with `kubectl`.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for an importer slot (admission: `MAX_ACTIVE_IMPORTS`,
    /// `MAX_ACTIVE_IMPORTS_PER_ORG`); `status.queuePosition` says its place.
    Queued,
    Pending,
    Running,
    Complete,
    Failed,
    /// `spec.cancelRequested`: stopped, the row `cancelled`.
    Cancelled,
    /// The spec cannot be run; waits for a change.
    Invalid,
}

impl Phase {
    pub const ALL: [Phase; 7] = [
        Phase::Queued,
        Phase::Pending,
        Phase::Running,
        Phase::Complete,
        Phase::Failed,
        Phase::Cancelled,
        Phase::Invalid,
    ];

    /// The name in `status.phase`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Queued => "Queued",
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Complete => "Complete",
            Phase::Failed => "Failed",
            Phase::Cancelled => "Cancelled",
            Phase::Invalid => "Invalid",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Complete | Phase::Failed | Phase::Cancelled)
    }

    pub fn parse(s: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_phase_reads_back_from_its_name() {
        for phase in Phase::ALL {
            assert_eq!(Phase::parse(phase.as_str()), Some(phase));
        }
        assert_eq!(Phase::parse("failed"), None, "names are case-sensitive");
    }
}
