//! Query parameters shared by the `/v1` endpoints, parsed the way Nomad does:
//! booleans case-insensitively, durations in Go's syntax (`5s`, `1m30s`),
//! every bad value rejected with a message that names the parameter.

use std::time::Duration;

use super::ApiError;

/// Default and longest wait of a blocking query.
pub const MAX_WAIT: Duration = Duration::from_secs(300);

/// Options common to reads and writes.
#[derive(Debug, Clone)]
pub struct QueryOptions {
    /// `?namespace=` (default `default`; `*` lists every namespace).
    pub namespace: String,
    /// `?region=`.
    pub region: Option<String>,
    /// `?stale`: read from this server without a leader round trip.
    pub stale: bool,
    /// `?index=`: block until the data changed after this index.
    pub index: u64,
    /// `?wait=`: how long to block.
    pub wait: Duration,
    /// `?prefix=`.
    pub prefix: String,
    /// `?per_page=`.
    pub per_page: Option<usize>,
    /// `?next_token=`.
    pub next_token: Option<String>,
    /// `?purge=`.
    pub purge: bool,
    /// `?global=`.
    pub global: bool,
    /// `?format=`.
    pub format: Option<String>,
    /// Any other parameter.
    pub other: Vec<(String, String)>,
}

impl Default for QueryOptions {
    fn default() -> Self {
        Self {
            namespace: "default".into(),
            region: None,
            stale: false,
            index: 0,
            wait: MAX_WAIT,
            prefix: String::new(),
            per_page: None,
            next_token: None,
            purge: false,
            global: false,
            format: None,
            other: Vec::new(),
        }
    }
}

/// Parse a boolean like Go's `strconv.ParseBool`, case-insensitively; an
/// empty value (`?stale`) is true.
pub fn parse_bool(name: &str, v: &str) -> Result<bool, ApiError> {
    match v.to_ascii_lowercase().as_str() {
        "" | "1" | "t" | "true" => Ok(true),
        "0" | "f" | "false" => Ok(false),
        _ => Err(ApiError::bad_request(format!(
            "Invalid value for {name}: {v:?} is not a boolean"
        ))),
    }
}

/// Parse a Go duration (`300ms`, `5s`, `1m30s`, `1h`); a bare number is
/// taken as seconds.
pub fn parse_duration(name: &str, v: &str) -> Result<Duration, ApiError> {
    let bad = || ApiError::bad_request(format!("Invalid {name} time: {v:?}"));
    if v.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = v.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = 0f64;
    let mut rest = v;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(num_end);
        let n: f64 = num.parse().map_err(|_| bad())?;
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * scale;
        rest = tail;
    }
    if !total.is_finite() || total < 0.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(total))
}

impl QueryOptions {
    /// Parse the query pairs of a request.
    pub fn parse(pairs: Vec<(String, String)>) -> Result<Self, ApiError> {
        let mut q = QueryOptions::default();
        for (k, v) in pairs {
            match k.as_str() {
                "namespace" => {
                    if !v.is_empty() {
                        q.namespace = v
                    }
                }
                "region" => {
                    if !v.is_empty() {
                        q.region = Some(v)
                    }
                }
                "stale" => q.stale = parse_bool("stale", &v)?,
                "index" => {
                    q.index = v.parse().map_err(|_| {
                        ApiError::bad_request(format!(
                            "Invalid index: {v:?} is not a non-negative integer"
                        ))
                    })?
                }
                "wait" => q.wait = parse_duration("wait", &v)?.min(MAX_WAIT),
                "prefix" => q.prefix = v,
                "per_page" => {
                    let n: usize = v.parse().map_err(|_| {
                        ApiError::bad_request(format!(
                            "Invalid per_page: {v:?} is not a non-negative integer"
                        ))
                    })?;
                    q.per_page = (n > 0).then_some(n);
                }
                "next_token" => q.next_token = (!v.is_empty()).then_some(v),
                "purge" => q.purge = parse_bool("purge", &v)?,
                "global" => q.global = parse_bool("global", &v)?,
                "format" => q.format = Some(v),
                _ => q.other.push((k, v)),
            }
        }
        Ok(q)
    }

    /// The value of another parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.other
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the namespace selects every namespace.
    pub fn all_namespaces(&self) -> bool {
        self.namespace == "*"
    }
}

/// One page of a listing sorted by key, and the token of the next page.
///
/// `items` is consumed lazily: callers pass an iterator already positioned
/// at the token (a range of the table), so a page costs O(page), not O(table).
pub fn paginate<T>(
    items: impl IntoIterator<Item = (String, T)>,
    q: &QueryOptions,
) -> (Vec<T>, Option<String>) {
    let token = q.next_token.clone().unwrap_or_default();
    let mut it = items.into_iter().skip_while(|(k, _)| *k < token);
    match q.per_page {
        None => (it.map(|(_, v)| v).collect(), None),
        Some(n) => {
            let page: Vec<T> = it.by_ref().take(n).map(|(_, v)| v).collect();
            let next = it.next().map(|(k, _)| k);
            (page, next)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_are_case_insensitive() {
        for t in ["True", "TRUE", "true", "1", "t", ""] {
            assert!(parse_bool("x", t).unwrap(), "{t}");
        }
        for f in ["False", "false", "0", "F"] {
            assert!(!parse_bool("x", f).unwrap(), "{f}");
        }
        let e = parse_bool("stale", "yes").unwrap_err();
        assert!(e.message.contains("stale"), "{}", e.message);
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("w", "5s").unwrap(), Duration::from_secs(5));
        assert_eq!(
            parse_duration("w", "1m30s").unwrap(),
            Duration::from_secs(90)
        );
        assert_eq!(
            parse_duration("w", "250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(parse_duration("w", "10").unwrap(), Duration::from_secs(10));
        assert!(parse_duration("w", "5 parsecs").is_err());
        assert!(parse_duration("w", "").is_err());
        assert!(parse_duration("w", "s").is_err());
    }

    #[test]
    fn wait_is_capped_and_index_must_be_numeric() {
        let q = QueryOptions::parse(vec![("wait".into(), "1h".into())]).unwrap();
        assert_eq!(q.wait, MAX_WAIT);
        let e = QueryOptions::parse(vec![("index".into(), "-1".into())]).unwrap_err();
        assert_eq!(e.status, http::StatusCode::BAD_REQUEST);
        assert!(e.message.contains("index"));
    }

    #[test]
    fn pages_follow_tokens() {
        let items: Vec<(String, u32)> = (0..5).map(|i| (format!("k{i}"), i)).collect();
        let mut q = QueryOptions {
            per_page: Some(2),
            ..Default::default()
        };
        let (p1, t1) = paginate(items.clone(), &q);
        assert_eq!(p1, vec![0, 1]);
        assert_eq!(t1.as_deref(), Some("k2"));
        q.next_token = t1;
        let (p2, t2) = paginate(items.clone(), &q);
        assert_eq!(p2, vec![2, 3]);
        q.next_token = t2;
        let (p3, t3) = paginate(items, &q);
        assert_eq!(p3, vec![4]);
        assert_eq!(t3, None);
    }
}
