//! Allocation names, `<job>.<group>[<index>]`, and the choice of indexes for
//! new placements (lowest free first) and for stops (highest first).

use std::collections::BTreeSet;

/// The name of allocation `index` of a group.
pub fn alloc_name(job_id: &str, group: &str, index: u64) -> String {
    format!("{job_id}.{group}[{index}]")
}

/// The index in an allocation name, if it has one.
pub fn name_index(name: &str) -> Option<u64> {
    let open = name.rfind('[')?;
    name[open + 1..].strip_suffix(']')?.parse().ok()
}

/// The indexes in use within one group.
#[derive(Debug, Clone)]
pub struct NameIndex {
    job_id: String,
    group: String,
    count: u64,
    used: BTreeSet<u64>,
}

impl NameIndex {
    /// An index over the names of `names`.
    pub fn new<'a>(
        job_id: &str,
        group: &str,
        count: i64,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        Self {
            job_id: job_id.to_string(),
            group: group.to_string(),
            count: count.max(0) as u64,
            used: names.into_iter().filter_map(name_index).collect(),
        }
    }

    /// The names of the `n` highest indexes in use.
    pub fn highest(&self, n: usize) -> BTreeSet<String> {
        self.used
            .iter()
            .rev()
            .take(n)
            .map(|i| alloc_name(&self.job_id, &self.group, *i))
            .collect()
    }

    /// Frees an index.
    pub fn unset(&mut self, index: u64) {
        self.used.remove(&index);
    }

    /// `n` names for new placements: free indexes below the count first,
    /// lowest first; then, if more are needed, indexes from 0 again.
    pub fn next(&mut self, n: usize) -> Vec<String> {
        let mut out = Vec::with_capacity(n);
        for i in 0..self.count {
            if out.len() == n {
                return out;
            }
            if self.used.insert(i) {
                out.push(alloc_name(&self.job_id, &self.group, i));
            }
        }
        let mut i = 0;
        while out.len() < n {
            out.push(alloc_name(&self.job_id, &self.group, i));
            i += 1;
        }
        out
    }

    /// `n` names for canaries (Nomad's `NextCanaries`): first the names of
    /// allocations being replaced (so promotion stops their namesakes),
    /// then free indexes below the count, then any index no existing canary
    /// uses. `canaries` are the names existing canaries hold.
    pub fn next_canaries(
        &mut self,
        n: usize,
        canaries: &BTreeSet<String>,
        destructive: &BTreeSet<u64>,
    ) -> Vec<String> {
        let mut out: Vec<String> = Vec::with_capacity(n);
        let mut taken = canaries.clone();
        for i in destructive.iter().filter(|i| **i < self.count) {
            if out.len() == n {
                return out;
            }
            let name = alloc_name(&self.job_id, &self.group, *i);
            if taken.insert(name.clone()) {
                out.push(name);
            }
        }
        for i in 0..self.count {
            if out.len() == n {
                return out;
            }
            let name = alloc_name(&self.job_id, &self.group, i);
            if !self.used.contains(&i) && taken.insert(name.clone()) {
                self.used.insert(i);
                out.push(name);
            }
        }
        let mut i = 0;
        while out.len() < n {
            let name = alloc_name(&self.job_id, &self.group, i);
            if taken.insert(name.clone()) {
                out.push(name);
            }
            i += 1;
        }
        out
    }
}
