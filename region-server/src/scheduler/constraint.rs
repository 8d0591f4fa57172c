//! Constraint and affinity operands: resolving `${...}` targets against a
//! node and comparing the values, as Nomad's `checkConstraint` does.

use std::cmp::Ordering;
use std::collections::HashMap;

use proto::model::{
    Node, CONSTRAINT_ATTRIBUTE_IS_NOT_SET, CONSTRAINT_ATTRIBUTE_IS_SET, CONSTRAINT_DISTINCT_HOSTS,
    CONSTRAINT_DISTINCT_PROPERTY, CONSTRAINT_DOUBLE_EQUAL, CONSTRAINT_EQUAL, CONSTRAINT_GREATER,
    CONSTRAINT_GREATER_EQUAL, CONSTRAINT_IS, CONSTRAINT_LESS, CONSTRAINT_LESS_EQUAL,
    CONSTRAINT_NOT, CONSTRAINT_NOT_EQUAL, CONSTRAINT_REGEX, CONSTRAINT_SEMVER,
    CONSTRAINT_SET_CONTAINS, CONSTRAINT_SET_CONTAINS_ALL, CONSTRAINT_SET_CONTAINS_ANY,
    CONSTRAINT_VERSION,
};
use regex::Regex;

/// Resolves a constraint target against a node: a literal is itself, an
/// interpolation (`${attr.kernel.name}`, `${meta.rack}`, `${node.unique.id}`,
/// `${node.datacenter}`, `${node.unique.name}`, `${node.class}`,
/// `${node.pool}`) is the node's value, `None` when the node lacks it.
pub fn resolve_target<'a>(target: &'a str, node: &'a Node) -> Option<&'a str> {
    let Some(inner) = target
        .strip_prefix("${")
        .map(|rest| rest.strip_suffix('}').unwrap_or(rest))
    else {
        return Some(target);
    };
    match inner {
        "node.unique.id" => Some(&node.id),
        "node.datacenter" => Some(&node.datacenter),
        "node.unique.name" => Some(&node.name),
        "node.class" => Some(&node.node_class),
        "node.pool" => Some(&node.node_pool),
        _ => {
            if let Some(attr) = inner.strip_prefix("attr.") {
                node.attributes.get(attr).map(String::as_str)
            } else if let Some(meta) = inner.strip_prefix("meta.") {
                node.meta.get(meta).map(String::as_str)
            } else {
                None
            }
        }
    }
}

/// Whether a target depends on something unique to one node, so a result
/// computed for it cannot be shared by every node of a computed class.
pub fn target_is_unique(target: &str) -> bool {
    target.contains("${node.unique.")
        || target.contains("${attr.unique.")
        || target.contains("${meta.unique.")
}

/// Compiled regular expressions and version constraints, reused across the
/// nodes of one evaluation.
#[derive(Default)]
pub struct OperandCache {
    regexes: HashMap<String, Option<Regex>>,
    versions: HashMap<(bool, String), Option<VersionConstraints>>,
}

impl OperandCache {
    fn regex(&mut self, pattern: &str) -> Option<&Regex> {
        self.regexes
            .entry(pattern.to_string())
            .or_insert_with(|| Regex::new(pattern).ok())
            .as_ref()
    }

    fn version_constraints(&mut self, text: &str, semver: bool) -> Option<&VersionConstraints> {
        self.versions
            .entry((semver, text.to_string()))
            .or_insert_with(|| VersionConstraints::parse(text, semver))
            .as_ref()
    }
}

/// Whether `lval <operand> rval` holds. `None` means the target was not found
/// on the node. `distinct_hosts` and `distinct_property` are not decided here
/// (they depend on other allocations) and always hold; an unknown operand
/// never holds.
pub fn check_operand(
    cache: &mut OperandCache,
    operand: &str,
    lval: Option<&str>,
    rval: Option<&str>,
) -> bool {
    match operand {
        CONSTRAINT_DISTINCT_HOSTS | CONSTRAINT_DISTINCT_PROPERTY => true,
        CONSTRAINT_EQUAL | CONSTRAINT_DOUBLE_EQUAL | CONSTRAINT_IS => {
            matches!((lval, rval), (Some(l), Some(r)) if l == r)
        }
        CONSTRAINT_NOT_EQUAL | CONSTRAINT_NOT => lval != rval,
        CONSTRAINT_LESS | CONSTRAINT_LESS_EQUAL | CONSTRAINT_GREATER | CONSTRAINT_GREATER_EQUAL => {
            match (lval, rval) {
                (Some(l), Some(r)) => check_order(operand, l, r),
                _ => false,
            }
        }
        CONSTRAINT_ATTRIBUTE_IS_SET => lval.is_some(),
        CONSTRAINT_ATTRIBUTE_IS_NOT_SET => lval.is_none(),
        CONSTRAINT_VERSION | CONSTRAINT_SEMVER => match (lval, rval) {
            (Some(l), Some(r)) => {
                let semver = operand == CONSTRAINT_SEMVER;
                let Some(version) = Version::parse(l, semver) else {
                    return false;
                };
                cache
                    .version_constraints(r, semver)
                    .is_some_and(|c| c.matches(&version))
            }
            _ => false,
        },
        CONSTRAINT_REGEX => match (lval, rval) {
            (Some(l), Some(r)) => cache.regex(r).is_some_and(|re| re.is_match(l)),
            _ => false,
        },
        CONSTRAINT_SET_CONTAINS | CONSTRAINT_SET_CONTAINS_ALL => match (lval, rval) {
            (Some(l), Some(r)) => {
                let have: Vec<&str> = l.split(',').map(str::trim).collect();
                r.split(',').map(str::trim).all(|want| have.contains(&want))
            }
            _ => false,
        },
        CONSTRAINT_SET_CONTAINS_ANY => match (lval, rval) {
            (Some(l), Some(r)) => {
                let have: Vec<&str> = l.split(',').map(str::trim).collect();
                r.split(',').map(str::trim).any(|want| have.contains(&want))
            }
            _ => false,
        },
        _ => false,
    }
}

/// Ordering comparison: integers if both parse as integers, else floats if
/// both parse as floats, else lexical.
fn check_order(operand: &str, l: &str, r: &str) -> bool {
    let ordering = if let (Ok(a), Ok(b)) = (l.trim().parse::<i64>(), r.trim().parse::<i64>()) {
        a.cmp(&b)
    } else if let (Ok(a), Ok(b)) = (l.trim().parse::<f64>(), r.trim().parse::<f64>()) {
        match a.partial_cmp(&b) {
            Some(ordering) => ordering,
            None => return false,
        }
    } else {
        l.cmp(r)
    };
    match operand {
        CONSTRAINT_LESS => ordering == Ordering::Less,
        CONSTRAINT_LESS_EQUAL => ordering != Ordering::Greater,
        CONSTRAINT_GREATER => ordering == Ordering::Greater,
        CONSTRAINT_GREATER_EQUAL => ordering != Ordering::Less,
        _ => false,
    }
}

/// A version as HashiCorp's go-version reads it: `v1.2.3`, `1.2`,
/// `1.2.3-beta.1+build`, `1.2.3beta1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// Numeric segments, padded with zeros to at least three.
    segments: Vec<u64>,
    /// How many segments were written.
    written: usize,
    /// Pre-release identifiers, empty for a release.
    pre: Vec<String>,
}

impl Version {
    /// Parses a version; `semver` restricts it to at most three segments.
    pub fn parse(text: &str, semver: bool) -> Option<Self> {
        let text = text.trim();
        let text = text.strip_prefix('v').unwrap_or(text);
        // Drop build metadata.
        let text = match text.split_once('+') {
            Some((head, meta)) if !meta.is_empty() => head,
            Some(_) => return None,
            None => text,
        };
        let numeric_end = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (numbers, rest) = text.split_at(numeric_end);
        let mut segments = Vec::new();
        for part in numbers.split('.') {
            if part.is_empty() {
                return None;
            }
            segments.push(part.parse::<u64>().ok()?);
        }
        if segments.is_empty() || (semver && segments.len() > 3) {
            return None;
        }
        let pre_text = if let Some(stripped) = rest.strip_prefix('-') {
            if stripped.is_empty() {
                return None;
            }
            stripped
        } else if rest.is_empty()
            || (!semver && rest.starts_with(|c: char| c.is_ascii_alphabetic()))
        {
            rest
        } else {
            return None;
        };
        let pre: Vec<String> = if pre_text.is_empty() {
            Vec::new()
        } else {
            let ids: Vec<String> = pre_text.split('.').map(str::to_string).collect();
            let valid = |id: &String| {
                !id.is_empty()
                    && id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '~')
            };
            if !ids.iter().all(valid) {
                return None;
            }
            ids
        };
        let written = segments.len();
        while segments.len() < 3 {
            segments.push(0);
        }
        Some(Self {
            segments,
            written,
            pre,
        })
    }

    fn is_prerelease(&self) -> bool {
        !self.pre.is_empty()
    }

    fn cmp_segments(&self, other: &Self) -> Ordering {
        let len = self.segments.len().max(other.segments.len());
        for i in 0..len {
            let a = self.segments.get(i).copied().unwrap_or(0);
            let b = other.segments.get(i).copied().unwrap_or(0);
            match a.cmp(&b) {
                Ordering::Equal => {}
                ordering => return ordering,
            }
        }
        Ordering::Equal
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.cmp_segments(other)
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => compare_prerelease(&self.pre, &other.pre),
            })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Semantic versioning precedence of pre-release identifiers.
fn compare_prerelease(a: &[String], b: &[String]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let ordering = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(m), Ok(n)) => m.cmp(&n),
            (Ok(_), Err(_)) => Ordering::Less,
            (Err(_), Ok(_)) => Ordering::Greater,
            (Err(_), Err(_)) => x.cmp(y),
        };
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
    a.len().cmp(&b.len())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VersionOp {
    Equal,
    NotEqual,
    Greater,
    Less,
    GreaterEqual,
    LessEqual,
    Pessimistic,
}

/// A comma-separated list of version constraints that must all hold, e.g.
/// `>= 1.2, < 2.0` or `~> 1.4`. With `semver`, pre-releases are ordered by
/// semantic versioning rules; without it (the `version` operand) they follow
/// go-version: a pre-release only satisfies an ordering constraint that
/// itself names a pre-release of the same base version.
#[derive(Debug, Clone)]
pub struct VersionConstraints {
    semver: bool,
    parts: Vec<(VersionOp, Version)>,
}

impl VersionConstraints {
    /// Parses the constraint list; `None` when any part is invalid.
    pub fn parse(text: &str, semver: bool) -> Option<Self> {
        let mut parts = Vec::new();
        for raw in text.split(',') {
            let raw = raw.trim();
            let (op, rest) = [
                (">=", VersionOp::GreaterEqual),
                ("<=", VersionOp::LessEqual),
                ("!=", VersionOp::NotEqual),
                ("~>", VersionOp::Pessimistic),
                (">", VersionOp::Greater),
                ("<", VersionOp::Less),
                ("=", VersionOp::Equal),
            ]
            .iter()
            .find_map(|(prefix, op)| raw.strip_prefix(prefix).map(|rest| (*op, rest)))
            .unwrap_or((VersionOp::Equal, raw));
            let version = Version::parse(rest.trim(), semver)?;
            parts.push((op, version));
        }
        if parts.is_empty() {
            return None;
        }
        Some(Self { semver, parts })
    }

    /// Whether `version` satisfies every constraint.
    pub fn matches(&self, version: &Version) -> bool {
        self.parts
            .iter()
            .all(|(op, constraint)| self.check(*op, version, constraint))
    }

    fn check(&self, op: VersionOp, v: &Version, c: &Version) -> bool {
        let ordering = v.cmp(c);
        let prerelease_ok = self.semver || prerelease_check(v, c);
        match op {
            VersionOp::Equal => ordering == Ordering::Equal,
            VersionOp::NotEqual => ordering != Ordering::Equal,
            VersionOp::Greater => prerelease_ok && ordering == Ordering::Greater,
            VersionOp::Less => prerelease_ok && ordering == Ordering::Less,
            VersionOp::GreaterEqual => prerelease_ok && ordering != Ordering::Less,
            VersionOp::LessEqual => prerelease_ok && ordering != Ordering::Greater,
            VersionOp::Pessimistic => {
                if !prerelease_check(v, c) || (c.is_prerelease() && !v.is_prerelease()) {
                    return false;
                }
                if ordering == Ordering::Less {
                    return false;
                }
                let cs = c.segments.len();
                if cs > v.segments.len() {
                    return false;
                }
                for i in 0..c.written.saturating_sub(1) {
                    if v.segments[i] != c.segments[i] {
                        return false;
                    }
                }
                c.segments[cs - 1] <= v.segments[cs - 1]
            }
        }
    }
}

/// go-version's rule for pre-releases in ordering constraints.
fn prerelease_check(v: &Version, c: &Version) -> bool {
    match (v.is_prerelease(), c.is_prerelease()) {
        (true, true) => v.cmp_segments(c) == Ordering::Equal,
        (true, false) => false,
        _ => true,
    }
}
