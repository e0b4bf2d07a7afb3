//! Admission and fair sharing of importer slots: which waiting imports may start now, and
//! the queue position of the others. Pure: the operator (Kubernetes Jobs) and the local
//! executor (child processes) gather what runs and what waits, call [`admit`], and act on
//! the answer.
//!
//! The order: round-robin across organizations, oldest first within one. An import's rank
//! is the number of imports of its organization running plus those ahead of it in its own
//! organization's queue; the lowest rank goes first, then the oldest (creation time, then
//! name). So one organization's 500 uploads take turns with another's one: the other's
//! first import has rank 0 (or its running count) and goes ahead of the 500's fifth.

use std::collections::HashMap;

/// The limits: importers running at once in all, and per organization (`None`: no
/// per-organization limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub total: usize,
    pub per_org: Option<usize>,
}

impl Limits {
    /// From the settings' values, where a per-organization limit of 0 means none.
    pub fn new(total: usize, per_org: usize) -> Limits {
        Limits {
            total,
            per_org: (per_org > 0).then_some(per_org),
        }
    }
}

/// An import waiting for a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting<K> {
    pub key: K,
    /// Its organization (`None`: made before organizations existed; one group of its own).
    pub org: Option<i64>,
    /// When it was created: anything that orders oldest first (RFC 3339 text, a timestamp).
    pub created: String,
    /// The tie-break after `created`.
    pub name: String,
}

/// The decision: who starts now, and the position of each of the others (1 is next).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<K> {
    pub admitted: Vec<K>,
    pub queued: Vec<(K, usize)>,
}

impl<K: PartialEq> Decision<K> {
    pub fn is_admitted(&self, key: &K) -> bool {
        self.admitted.contains(key)
    }

    /// The queue position of `key`, if it waits.
    pub fn position(&self, key: &K) -> Option<usize> {
        self.queued.iter().find(|(k, _)| k == key).map(|(_, p)| *p)
    }
}

/// Who of `waiting` starts, given the organizations of the imports running now (`running`,
/// one entry per running import) and the limits. The rest wait, in the order they will be
/// admitted as slots free.
pub fn admit<K: Clone>(
    waiting: &[Waiting<K>],
    running: &[Option<i64>],
    limits: Limits,
) -> Decision<K> {
    let mut per_org: HashMap<Option<i64>, usize> = HashMap::new();
    for org in running {
        *per_org.entry(*org).or_default() += 1;
    }
    let mut order: Vec<&Waiting<K>> = waiting.iter().collect();
    order.sort_by(|a, b| (&a.org, &a.created, &a.name).cmp(&(&b.org, &b.created, &b.name)));
    // The rank: running of its organization + those ahead of it in its organization.
    let mut seen: HashMap<Option<i64>, usize> = HashMap::new();
    let mut ranked: Vec<(usize, &Waiting<K>)> = order
        .into_iter()
        .map(|w| {
            let ahead = seen.entry(w.org).or_default();
            let rank = per_org.get(&w.org).copied().unwrap_or(0) + *ahead;
            *ahead += 1;
            (rank, w)
        })
        .collect();
    ranked.sort_by(|(ra, a), (rb, b)| (ra, &a.created, &a.name).cmp(&(rb, &b.created, &b.name)));
    let mut free = limits.total.saturating_sub(running.len());
    let mut decision = Decision {
        admitted: Vec::new(),
        queued: Vec::new(),
    };
    for (_, w) in ranked {
        let active = per_org.entry(w.org).or_default();
        let org_full = limits.per_org.is_some_and(|max| *active >= max);
        if free > 0 && !org_full {
            free -= 1;
            *active += 1;
            decision.admitted.push(w.key.clone());
        } else {
            let position = decision.queued.len() + 1;
            decision.queued.push((w.key.clone(), position));
        }
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(key: &str, org: i64, created: &str) -> Waiting<String> {
        Waiting {
            key: key.into(),
            org: Some(org),
            created: created.into(),
            name: key.into(),
        }
    }

    fn summary(d: &Decision<String>) -> String {
        let queued: Vec<String> = d.queued.iter().map(|(k, p)| format!("{k}#{p}")).collect();
        format!("run {} | wait {}", d.admitted.join(" "), queued.join(" "))
    }

    /// One row of the table: the case, who waits, the organizations of those running, the
    /// limits, the decision.
    type Case<'a> = (
        &'a str,
        &'a [Waiting<String>],
        Vec<Option<i64>>,
        Limits,
        &'a str,
    );

    #[test]
    fn the_decision_for_each_case() {
        let a: Vec<_> = (1..=5)
            .map(|i| w(&format!("a{i}"), 1, &format!("t0{i}")))
            .collect();
        let b1 = w("b1", 2, "t09");
        let c1 = w("c1", 3, "t08");
        let same_time = [w("a-y", 1, "t01"), w("a-x", 1, "t01")];
        let mut a_then_b = a.clone();
        a_then_b.push(b1.clone());
        let mut three_orgs = a_then_b.clone();
        three_orgs.push(c1.clone());
        let unlimited = Limits::new(100, 0);
        let two = Limits::new(2, 0);
        let four = Limits::new(4, 0);
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("nothing waits", &[], vec![], two, "run  | wait "),
            ("room for all", &a[..2], vec![], unlimited, "run a1 a2 | wait "),
            ("oldest first within an organization", &a, vec![], two,
                "run a1 a2 | wait a3#1 a4#2 a5#3"),
            ("same time: by name", &same_time, vec![], Limits::new(1, 0),
                "run a-x | wait a-y#1"),
            ("a later organization's first goes before the first's second", &a_then_b, vec![], two,
                "run a1 b1 | wait a2#1 a3#2 a4#3 a5#4"),
            ("running imports count against their organization", &a_then_b, vec![Some(1), Some(1)], four,
                "run b1 a1 | wait a2#1 a3#2 a4#3 a5#4"),
            ("all slots taken: the next free one goes to the other organization", &a_then_b,
                vec![Some(1); 4], four, "run  | wait b1#1 a1#2 a2#3 a3#4 a4#5 a5#6"),
            ("round-robin across three organizations", &three_orgs, vec![], Limits::new(3, 0),
                "run a1 c1 b1 | wait a2#1 a3#2 a4#3 a5#4"),
            ("per-organization limit", &a_then_b, vec![], Limits::new(4, 2),
                "run a1 b1 a2 | wait a3#1 a4#2 a5#3"),
            ("per-organization limit reached by running ones", &a_then_b, vec![Some(1), Some(1)],
                Limits::new(4, 2), "run b1 | wait a1#1 a2#2 a3#3 a4#4 a5#5"),
            ("more running than the limit (lowered): nobody starts", &a, vec![Some(2); 3], two,
                "run  | wait a1#1 a2#2 a3#3 a4#4 a5#5"),
        ];
        for (case, waiting, running, limits, want) in cases {
            assert_eq!(summary(&admit(waiting, &running, limits)), want, "{case}");
        }
    }

    #[test]
    fn an_organization_with_500_waiting_does_not_starve_another() {
        let many: Vec<_> = (0..500)
            .map(|i| w(&format!("a{i:03}"), 1, &format!("t{i:03}")))
            .collect();
        let mut waiting = many.clone();
        waiting.push(w("b", 2, "t999"));
        let d = admit(&waiting, &[Some(1); 4], Limits::new(4, 0));
        assert_eq!(d.position(&"b".to_string()), Some(1));
        let d = admit(&waiting, &[Some(1); 3], Limits::new(4, 0));
        assert!(d.is_admitted(&"b".to_string()));
        assert_eq!(d.position(&"a000".to_string()), Some(1));
    }
}
