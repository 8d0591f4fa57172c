//! Output helpers: column tables, `key = value` lists, times, short ids and
//! the field diff `job plan` and `job history -p` print.

use serde_json::Value;

/// A table with a header row, columns padded to their widest cell and
/// separated by two spaces, as Nomad prints lists.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        let last = cells.len().saturating_sub(1);
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
                out.push_str(&" ".repeat(pad));
            }
        }
        out.trim_end().to_string()
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `Key = Value` lines with the `=` aligned.
pub fn kv(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{k:<width$} = {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first 8 characters of an id, as Nomad shows them without `-verbose`.
pub fn short(id: &str) -> String {
    id.chars().take(8).collect()
}

/// A string field of a JSON object (empty when missing).
pub fn s(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// An integer field of a JSON object (0 when missing).
pub fn n(v: &Value, key: &str) -> i64 {
    v[key].as_i64().unwrap_or(0)
}

/// Now, in Unix nanoseconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Unix nanoseconds as an RFC 3339 UTC time to the second.
pub fn time(ns: i64) -> String {
    if ns <= 0 {
        return "<none>".to_string();
    }
    let full = proto::model::time::format_rfc3339(ns);
    match full.split_once('.') {
        Some((secs, _)) => format!("{secs}Z"),
        None => full,
    }
}

/// How long ago `ns` was, relative to `now` (both Unix nanoseconds):
/// `12s ago`, `3m ago`, `2h5m ago`, `4d ago`.
pub fn ago(ns: i64, now: i64) -> String {
    if ns <= 0 {
        return "<none>".to_string();
    }
    let secs = ((now - ns).max(0)) / 1_000_000_000;
    if secs < 60 {
        format!("{secs}s ago")
    } else if secs < 3600 {
        format!("{}m{}s ago", secs / 60, secs % 60)
    } else if secs < 86_400 {
        format!("{}h{}m ago", secs / 3600, secs % 3600 / 60)
    } else {
        format!("{}d{}h ago", secs / 86_400, secs % 86_400 / 3600)
    }
}

/// Pretty JSON.
pub fn json(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// Job fields the servers manage; a diff ignores them.
const SERVER_MANAGED: &[&str] = &[
    "Status",
    "StatusDescription",
    "Stable",
    "Version",
    "SubmitTime",
    "CreateIndex",
    "ModifyIndex",
    "JobModifyIndex",
];

/// The differences between two versions of a job, one line each, as
/// Nomad's plan prints them: `+ Path: "new"`, `- Path: "old"`,
/// `~ Path: "old" => "new"`. Groups and tasks are matched by name.
pub fn job_diff(old: &Value, new: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            for k in SERVER_MANAGED {
                o.remove(*k);
            }
        }
        v
    };
    diff_value("", &strip(old), &strip(new), &mut out);
    out
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn diff_value(path: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    if old == new {
        return;
    }
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let x = a.get(k).unwrap_or(&Value::Null);
                let y = b.get(k).unwrap_or(&Value::Null);
                diff_value(&join(path, k), x, y, out);
            }
        }
        (Value::Array(a), Value::Array(b)) if named(a) && named(b) => {
            for x in a {
                let name = s(x, "Name");
                let p = format!("{path}[{name}]");
                match b.iter().find(|y| s(y, "Name") == name) {
                    Some(y) => diff_value(&p, x, y, out),
                    None => out.push(format!("- {p}")),
                }
            }
            for y in b {
                let name = s(y, "Name");
                if !a.iter().any(|x| s(x, "Name") == name) {
                    out.push(format!("+ {path}[{name}]"));
                }
            }
        }
        _ if is_empty(old) && is_empty(new) => {}
        _ if is_empty(old) => out.push(format!("+ {path}: {}", scalar(new))),
        _ if is_empty(new) => out.push(format!("- {path}: {}", scalar(old))),
        _ => out.push(format!("~ {path}: {} => {}", scalar(old), scalar(new))),
    }
}

/// A list of objects that all have a `Name` (groups, tasks).
fn named(items: &[Value]) -> bool {
    !items.is_empty() && items.iter().all(|v| v["Name"].is_string())
}

fn scalar(v: &Value) -> String {
    v.to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["ID", "Status"],
            &[
                vec!["web".into(), "running".into()],
                vec!["a-longer-id".into(), "dead".into()],
            ],
        );
        assert_eq!(
            t,
            "ID           Status\nweb          running\na-longer-id  dead"
        );
    }

    #[test]
    fn kv_aligns_equals() {
        assert_eq!(
            kv(&[("ID", "web".into()), ("Status", "running".into())]),
            "ID     = web\nStatus = running"
        );
    }

    #[test]
    fn times() {
        assert_eq!(time(0), "<none>");
        assert_eq!(time(1_700_000_000_123_456_789), "2023-11-14T22:13:20Z");
        let now = 1_700_000_000_000_000_000;
        assert_eq!(ago(now - 5_000_000_000, now), "5s ago");
        assert_eq!(ago(now - 125_000_000_000, now), "2m5s ago");
        assert_eq!(ago(now - 7_500 * 1_000_000_000, now), "2h5m ago");
        assert_eq!(short("0123456789abcdef"), "01234567");
    }

    #[test]
    fn job_diff_lists_changes_by_path() {
        let old = json!({
            "ID": "web", "Version": 1, "Priority": 50,
            "Meta": {"a": "1"},
            "TaskGroups": [
                {"Name": "g", "Count": 1, "Tasks": [{"Name": "t", "Env": {"X": "1"}}]},
                {"Name": "gone", "Count": 1}
            ]
        });
        let new = json!({
            "ID": "web", "Version": 2, "Priority": 60,
            "Meta": {"a": "1", "b": "2"},
            "TaskGroups": [
                {"Name": "g", "Count": 3, "Tasks": [{"Name": "t", "Env": {}}]},
                {"Name": "added", "Count": 1}
            ]
        });
        assert_eq!(
            job_diff(&old, &new),
            vec![
                "+ Meta.b: \"2\"",
                "~ Priority: 50 => 60",
                "~ TaskGroups[g].Count: 1 => 3",
                "- TaskGroups[g].Tasks[t].Env.X: \"1\"",
                "- TaskGroups[gone]",
                "+ TaskGroups[added]",
            ]
        );
        assert!(job_diff(&old, &old).is_empty());
    }
}
