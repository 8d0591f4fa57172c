//! HCL2 job files: the conversion behind `PUT /v1/jobs/parse` and
//! `atoll job run job.hcl`.
//!
//! [`parse_job`] reads a file holding one `job "<id>" { ... }` block (plus
//! `variable` and `locals` blocks) and returns the [`Job`] it declares, the
//! way Nomad's HCL2 job parser does:
//!
//! * blocks map to the model's fields (`group`, `task`, `constraint`,
//!   `affinity`, `spread`, `update`, `restart`, `reschedule`, `migrate`,
//!   `multiregion`, `periodic`, `parameterized`, `dispatch_payload`,
//!   `network`, `resources`, `logs`, `lifecycle`, `ephemeral_disk`, `meta`,
//!   `env`, `config`);
//! * durations are Go duration strings (`"30s"`, `"1h30m"`) and become
//!   nanoseconds;
//! * `var.<name>` refers to a `variable` block, whose value is the one passed
//!   in or its `default`; `local.<name>` to a `locals` entry;
//! * interpolations of runtime values (`${attr.kernel.name}`,
//!   `${node.datacenter}`, `${NOMAD_TASK_NAME}`, `${meta.x}`, ...) are kept
//!   verbatim for the scheduler and the client to resolve;
//! * an unknown argument or block is an error, and every error names the
//!   line and column it is about.
//!
//! Blocks Atoll does not model (`service`, `template`, `artifact`, `vault`,
//! `volume`, ...) are rejected with that message rather than dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use hcl::edit::expr::{Expression, ObjectKey};
use hcl::edit::structure::{Attribute, Block, Body, Structure};
use hcl::edit::template::{Element, Template};
use hcl::edit::visit::{visit_expr, Visit};
use hcl::edit::Span;
use hcl::eval::{Context, Evaluate};
use serde_json::{Map, Value as Json};

use crate::model::{
    Affinity, Constraint, EphemeralDisk, Job, LogConfig, MigrateStrategy, Multiregion,
    MultiregionRegion, MultiregionStrategy, NetworkResource, Port, ReschedulePolicy, Resources,
    RestartPolicy, Spread, SpreadTarget, Task, TaskGroup, TaskLifecycle, UpdateStrategy,
};

/// A problem in a job file, with the 1-based line and column it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct HclError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

type Result<T> = std::result::Result<T, HclError>;

/// Parses an HCL2 job file into a [`Job`].
///
/// `vars` are values for the file's `variable` blocks, as given on a
/// command line (`-var name=value`): a string, read as an HCL expression
/// when the variable's `type` is not `string` (so `count=3` is a number for
/// a `number` variable). The job is not canonicalized: call
/// [`Job::canonicalize`] for Nomad's defaults.
pub fn parse_job(src: &str, vars: &BTreeMap<String, String>) -> Result<Job> {
    let body = hcl::edit::parser::parse_body(src).map_err(|e| HclError {
        line: e.location().line(),
        column: e.location().column(),
        message: e.message().to_string(),
    })?;
    let mut p = Parser::new(src);
    p.check(&body, &[], &["job", "variable", "locals"], None)?;
    p.declare_variables(&body, vars)?;
    p.declare_locals(&body)?;
    let mut jobs = body.get_blocks("job");
    let Some(block) = jobs.next() else {
        return Err(p.error(
            None,
            "no job block: a job file needs `job \"<id>\" { ... }`",
        ));
    };
    if let Some(extra) = jobs.next() {
        return Err(p.error(extra.span(), "only one job block is allowed in a job file"));
    }
    p.job(block)
}

/// Reads a variables file (`name = value` lines, Nomad's `-var-file` and
/// the `Variables` of `/v1/jobs/parse`) into the raw strings
/// [`parse_job`] takes: strings as they are, other values as HCL/JSON text.
pub fn parse_var_file(src: &str) -> Result<BTreeMap<String, String>> {
    let body = hcl::edit::parser::parse_body(src).map_err(|e| HclError {
        line: e.location().line(),
        column: e.location().column(),
        message: e.message().to_string(),
    })?;
    let p = Parser::new(src);
    let mut out = BTreeMap::new();
    for structure in body.iter() {
        match structure {
            Structure::Attribute(attr) => {
                let value = p.eval(&attr.value)?;
                let raw = match value {
                    hcl::Value::String(s) => s,
                    other => serde_json::to_string(&other).map_err(|e| {
                        p.error(attr.value.span(), format!("cannot encode value: {e}"))
                    })?,
                };
                out.insert(attr.key.as_str().to_string(), raw);
            }
            Structure::Block(block) => {
                return Err(p.error(
                    block.span(),
                    "a variables file holds only `name = value` lines",
                ))
            }
        }
    }
    Ok(out)
}

/// Parses a Go duration (`"300ms"`, `"1.5h"`, `"2h45m"`) into nanoseconds.
pub fn parse_duration(text: &str) -> std::result::Result<i64, String> {
    let s = text.trim();
    let (negative, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(format!("invalid duration {text:?}"));
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!("invalid duration {text:?}"));
        }
        let number: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("invalid duration {text:?}"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("missing unit in duration {text:?}")),
            other => return Err(format!("unknown unit {other:?} in duration {text:?}")),
        };
        rest = &rest[unit_len..];
        total += number * unit;
    }
    if total > i64::MAX as f64 {
        return Err(format!("duration {text:?} is too long"));
    }
    let nanos = total.round() as i64;
    Ok(if negative { -nanos } else { nanos })
}

/// Roots of runtime interpolations that stay verbatim in strings.
fn is_eval_root(name: &str) -> bool {
    name == "var" || name == "local"
}

/// Blocks Nomad knows that Atoll does not model.
const UNSUPPORTED: &[&str] = &[
    "service",
    "template",
    "artifact",
    "vault",
    "volume",
    "volume_mount",
    "consul",
    "csi_plugin",
    "scaling",
    "identity",
    "check",
    "connect",
    "device",
    "ui",
    "action",
    "secret",
    "schedule",
];

struct Parser<'s> {
    src: &'s str,
    ctx: Context<'static>,
    vars: hcl::Map<String, hcl::Value>,
    locals: hcl::Map<String, hcl::Value>,
}

/// Collects the root variables an expression refers to.
#[derive(Default)]
struct Roots(BTreeSet<String>);

impl Visit for Roots {
    fn visit_expr(&mut self, node: &Expression) {
        if let Expression::Variable(var) = node {
            self.0.insert(var.as_str().to_string());
        }
        visit_expr(self, node);
    }
}

fn roots(expr: &Expression) -> BTreeSet<String> {
    let mut r = Roots::default();
    r.visit_expr(expr);
    r.0
}

impl<'s> Parser<'s> {
    fn new(src: &'s str) -> Self {
        Self {
            src,
            ctx: Context::new(),
            vars: hcl::Map::new(),
            locals: hcl::Map::new(),
        }
    }

    /// An error at the start of `span` (or the top of the file).
    fn error(&self, span: Option<Range<usize>>, message: impl Into<String>) -> HclError {
        let offset = span.map(|s| s.start).unwrap_or(0).min(self.src.len());
        let before = self.src.get(..offset).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let column = before.get(line_start..).unwrap_or("").chars().count() + 1;
        HclError {
            line,
            column,
            message: message.into(),
        }
    }

    /// Rejects arguments and blocks a body does not allow.
    fn check(
        &self,
        body: &Body,
        attrs: &[&str],
        blocks: &[&str],
        within: Option<&str>,
    ) -> Result<()> {
        let place = within
            .map(|w| format!(" in a {w} block"))
            .unwrap_or_default();
        let mut seen = BTreeSet::new();
        for structure in body.iter() {
            match structure {
                Structure::Attribute(attr) => {
                    let key = attr.key.as_str();
                    if !attrs.contains(&key) {
                        return Err(self.error(
                            attr.span(),
                            format!("Unsupported argument: an argument named {key:?} is not expected here{place}"),
                        ));
                    }
                    if !seen.insert(key.to_string()) {
                        return Err(self.error(
                            attr.span(),
                            format!("Duplicate argument: {key:?} was already set{place}"),
                        ));
                    }
                }
                Structure::Block(block) => {
                    let ident = block.ident.as_str();
                    if blocks.contains(&ident) {
                        continue;
                    }
                    let message = if UNSUPPORTED.contains(&ident) {
                        format!("Unsupported block type: Atoll does not support {ident:?} blocks")
                    } else if attrs.contains(&ident) {
                        format!("Unsupported block type: {ident:?} is an argument here; write `{ident} = ...`")
                    } else {
                        format!("Unsupported block type: blocks of type {ident:?} are not expected here{place}")
                    };
                    return Err(self.error(block.span(), message));
                }
            }
        }
        Ok(())
    }

    fn declare_variables(&mut self, body: &Body, given: &BTreeMap<String, String>) -> Result<()> {
        let mut declared = BTreeSet::new();
        for block in body.get_blocks("variable") {
            let name = self.one_label(block, "variable")?;
            self.check(
                &block.body,
                &["type", "default", "description", "sensitive", "nullable"],
                &["validation"],
                Some("variable"),
            )?;
            let ty = match block.body.get_attribute("type") {
                Some(attr) => Some(type_name(&attr.value).ok_or_else(|| {
                    self.error(
                        attr.value.span(),
                        "type must be string, number, bool, list(...), map(...), object(...) or any",
                    )
                })?),
                None => None,
            };
            let value = match given.get(&name) {
                Some(raw) => self.variable_value(block, &name, ty.as_deref(), raw)?,
                None => match block.body.get_attribute("default") {
                    Some(attr) => self.eval(&attr.value)?,
                    None => {
                        return Err(self.error(
                            block.span(),
                            format!("variable {name:?} has no default and no value was given: pass -var {name}=..."),
                        ))
                    }
                },
            };
            declared.insert(name.clone());
            self.vars.insert(name.clone(), value.clone());
            self.validate_variable(block, &name, value)?;
        }
        if let Some(unknown) = given.keys().find(|k| !declared.contains(*k)) {
            return Err(HclError {
                line: 1,
                column: 1,
                message: format!(
                    "a value was given for variable {unknown:?}, which the job file does not declare"
                ),
            });
        }
        self.ctx
            .declare_var("var", hcl::Value::Object(self.vars.clone()));
        Ok(())
    }

    /// Checks a variable's `validation` blocks: each `condition` may refer
    /// to `var.<name>` (the variable itself) and must hold.
    fn validate_variable(&self, block: &Block, name: &str, value: hcl::Value) -> Result<()> {
        let mut ctx = Context::new();
        let mut own = hcl::Map::new();
        own.insert(name.to_string(), value);
        ctx.declare_var("var", hcl::Value::Object(own));
        for v in block.body.get_blocks("validation") {
            self.no_labels(v, "validation")?;
            self.check(
                &v.body,
                &["condition", "error_message"],
                &[],
                Some("validation"),
            )?;
            let Some(cond) = v.body.get_attribute("condition") else {
                return Err(self.error(v.span(), "a validation block needs a condition"));
            };
            let expr: hcl::Expression = cond.value.clone().into();
            let holds = match expr.evaluate(&ctx) {
                Ok(hcl::Value::Bool(b)) => b,
                Ok(_) => {
                    return Err(self.error(
                        cond.value.span(),
                        "a validation condition must be true or false",
                    ))
                }
                Err(e) => return Err(self.error(cond.value.span(), e.to_string())),
            };
            if !holds {
                let message = self
                    .string(&v.body, "error_message")?
                    .unwrap_or_else(|| "the value is not valid".to_string());
                return Err(self.error(
                    block.span(),
                    format!("invalid value for variable {name:?}: {message}"),
                ));
            }
        }
        Ok(())
    }

    fn variable_value(
        &self,
        block: &Block,
        name: &str,
        ty: Option<&str>,
        raw: &str,
    ) -> Result<hcl::Value> {
        if matches!(ty, None | Some("string")) {
            return Ok(hcl::Value::String(raw.to_string()));
        }
        let bad = |e: &dyn std::fmt::Display| {
            self.error(
                block.span(),
                format!("invalid value {raw:?} for variable {name:?}: {e}"),
            )
        };
        let expr = hcl::edit::parser::parse_expr(raw).map_err(|e| bad(&e))?;
        let expr: hcl::Expression = expr.into();
        let value = expr.evaluate(&Context::new()).map_err(|e| bad(&e))?;
        let fits = match (ty, &value) {
            (Some("number"), hcl::Value::Number(_)) => true,
            (Some("number"), _) => false,
            (Some("bool"), hcl::Value::Bool(_)) => true,
            (Some("bool"), _) => false,
            _ => true,
        };
        if !fits {
            return Err(bad(&format!("expected a {}", ty.unwrap_or("value"))));
        }
        Ok(value)
    }

    fn declare_locals(&mut self, body: &Body) -> Result<()> {
        for block in body.get_blocks("locals") {
            if !block.labels.is_empty() {
                return Err(self.error(block.span(), "a locals block has no labels"));
            }
            for structure in block.body.iter() {
                match structure {
                    Structure::Attribute(attr) => {
                        let value = self.eval(&attr.value)?;
                        self.locals.insert(attr.key.as_str().to_string(), value);
                        self.ctx
                            .declare_var("local", hcl::Value::Object(self.locals.clone()));
                    }
                    Structure::Block(b) => {
                        return Err(
                            self.error(b.span(), "a locals block holds only `name = value` lines")
                        )
                    }
                }
            }
        }
        Ok(())
    }

    // ---- expressions ----

    /// Evaluates an expression; runtime interpolations in strings are kept.
    fn eval(&self, expr: &Expression) -> Result<hcl::Value> {
        match expr {
            Expression::StringTemplate(t) => self.template(t, expr.span()),
            Expression::HeredocTemplate(h) => self.template(&h.template, expr.span()),
            Expression::Array(items) => Ok(hcl::Value::Array(
                items.iter().map(|e| self.eval(e)).collect::<Result<_>>()?,
            )),
            Expression::Object(object) => {
                let mut map = hcl::Map::new();
                for (key, value) in object.iter() {
                    let key = match key {
                        ObjectKey::Ident(ident) => ident.as_str().to_string(),
                        ObjectKey::Expression(e) => match self.eval(e)? {
                            hcl::Value::String(s) => s,
                            other => other.to_string(),
                        },
                    };
                    map.insert(key, self.eval(value.expr())?);
                }
                Ok(hcl::Value::Object(map))
            }
            _ => {
                let converted: hcl::Expression = expr.clone().into();
                converted
                    .evaluate(&self.ctx)
                    .map_err(|e| self.error(expr.span(), e.to_string()))
            }
        }
    }

    /// A string template: interpolations of `var`/`local` are evaluated,
    /// the others (node attributes, task environment) kept as written.
    fn template(&self, template: &Template, span: Option<Range<usize>>) -> Result<hcl::Value> {
        let mut out = String::new();
        for element in template.iter() {
            match element {
                Element::Literal(lit) => out.push_str(lit.value()),
                Element::Interpolation(interp) => {
                    let refs = roots(&interp.expr);
                    if !refs.is_empty() && refs.iter().all(|r| is_eval_root(r)) {
                        match self.eval(&interp.expr)? {
                            hcl::Value::String(s) => out.push_str(&s),
                            hcl::Value::Null => {}
                            v @ (hcl::Value::Number(_) | hcl::Value::Bool(_)) => {
                                out.push_str(&v.to_string())
                            }
                            _ => {
                                return Err(self.error(
                                    interp.expr.span(),
                                    "cannot interpolate a list or object into a string",
                                ))
                            }
                        }
                    } else if refs.is_empty() {
                        let v = self.eval(&interp.expr)?;
                        match v {
                            hcl::Value::String(s) => out.push_str(&s),
                            other => out.push_str(&other.to_string()),
                        }
                    } else {
                        let text =
                            interp.span().and_then(|r| self.src.get(r)).ok_or_else(|| {
                                self.error(span.clone(), "interpolation without source")
                            })?;
                        out.push_str(text);
                    }
                }
                Element::Directive(d) => {
                    return Err(self.error(
                        d.span(),
                        "template directives (%{if}, %{for}) are not supported in job files",
                    ))
                }
            }
        }
        Ok(hcl::Value::String(out))
    }

    fn attr_value(&self, attr: &Attribute) -> Result<hcl::Value> {
        self.eval(&attr.value)
    }

    fn string(&self, body: &Body, key: &str) -> Result<Option<String>> {
        let Some(attr) = body.get_attribute(key) else {
            return Ok(None);
        };
        match self.attr_value(attr)? {
            hcl::Value::String(s) => Ok(Some(s)),
            hcl::Value::Number(n) => Ok(Some(n.to_string())),
            hcl::Value::Bool(b) => Ok(Some(b.to_string())),
            hcl::Value::Null => Ok(None),
            _ => Err(self.error(attr.value.span(), format!("{key} must be a string"))),
        }
    }

    fn int(&self, body: &Body, key: &str) -> Result<Option<i64>> {
        let Some(attr) = body.get_attribute(key) else {
            return Ok(None);
        };
        let bad = || self.error(attr.value.span(), format!("{key} must be a whole number"));
        match self.attr_value(attr)? {
            hcl::Value::Number(n) => n.as_i64().map(Some).ok_or_else(bad),
            hcl::Value::String(s) => s.trim().parse().map(Some).map_err(|_| bad()),
            hcl::Value::Null => Ok(None),
            _ => Err(bad()),
        }
    }

    fn bool(&self, body: &Body, key: &str) -> Result<Option<bool>> {
        let Some(attr) = body.get_attribute(key) else {
            return Ok(None);
        };
        match self.attr_value(attr)? {
            hcl::Value::Bool(b) => Ok(Some(b)),
            hcl::Value::String(s) if s == "true" => Ok(Some(true)),
            hcl::Value::String(s) if s == "false" => Ok(Some(false)),
            hcl::Value::Null => Ok(None),
            _ => Err(self.error(attr.value.span(), format!("{key} must be true or false"))),
        }
    }

    fn duration(&self, body: &Body, key: &str) -> Result<Option<i64>> {
        let Some(attr) = body.get_attribute(key) else {
            return Ok(None);
        };
        match self.attr_value(attr)? {
            hcl::Value::String(s) => parse_duration(&s)
                .map(Some)
                .map_err(|e| self.error(attr.value.span(), format!("{key}: {e}"))),
            hcl::Value::Null => Ok(None),
            _ => Err(self.error(
                attr.value.span(),
                format!("{key} must be a duration string such as \"30s\" or \"1h30m\""),
            )),
        }
    }

    fn strings(&self, body: &Body, key: &str) -> Result<Option<Vec<String>>> {
        let Some(attr) = body.get_attribute(key) else {
            return Ok(None);
        };
        let bad = || {
            self.error(
                attr.value.span(),
                format!("{key} must be a list of strings"),
            )
        };
        match self.attr_value(attr)? {
            hcl::Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    hcl::Value::String(s) => Ok(s),
                    hcl::Value::Number(n) => Ok(n.to_string()),
                    _ => Err(bad()),
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            hcl::Value::Null => Ok(None),
            _ => Err(bad()),
        }
    }

    /// A string map given as `key = { ... }` or as a `key { ... }` block.
    fn string_map(&self, body: &Body, key: &str) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        let mut add = |object: hcl::Map<String, hcl::Value>, span: Option<Range<usize>>| {
            for (k, v) in object {
                let v = match v {
                    hcl::Value::String(s) => s,
                    hcl::Value::Number(n) => n.to_string(),
                    hcl::Value::Bool(b) => b.to_string(),
                    _ => {
                        return Err(self.error(
                            span.clone(),
                            format!("{key}: the value of {k:?} must be a string"),
                        ))
                    }
                };
                out.insert(k, v);
            }
            Ok(())
        };
        if let Some(attr) = body.get_attribute(key) {
            match self.attr_value(attr)? {
                hcl::Value::Object(o) => add(o, attr.value.span())?,
                hcl::Value::Null => {}
                _ => return Err(self.error(attr.value.span(), format!("{key} must be a map"))),
            }
        }
        for block in body.get_blocks(key) {
            if !block.labels.is_empty() {
                return Err(self.error(block.span(), format!("a {key} block has no labels")));
            }
            let mut object = hcl::Map::new();
            for structure in block.body.iter() {
                match structure {
                    Structure::Attribute(a) => {
                        object.insert(a.key.as_str().to_string(), self.attr_value(a)?);
                    }
                    Structure::Block(b) => {
                        return Err(self.error(
                            b.span(),
                            format!("a {key} block holds only `name = value` lines"),
                        ))
                    }
                }
            }
            add(object, block.span())?;
        }
        Ok(out)
    }

    fn one_label(&self, block: &Block, what: &str) -> Result<String> {
        match block.labels.as_slice() {
            [label] => Ok(label.as_str().to_string()),
            _ => Err(self.error(
                block.span(),
                format!("a {what} block takes exactly one label: {what} \"<name>\" {{ ... }}"),
            )),
        }
    }

    fn no_labels(&self, block: &Block, what: &str) -> Result<()> {
        if block.labels.is_empty() {
            Ok(())
        } else {
            Err(self.error(block.span(), format!("a {what} block has no labels")))
        }
    }

    /// At most one block `ident`, without labels.
    fn single<'b>(&self, body: &'b Body, ident: &'b str) -> Result<Option<&'b Block>> {
        let mut blocks = body.get_blocks(ident);
        let first = blocks.next();
        if let Some(extra) = blocks.next() {
            return Err(self.error(
                extra.span(),
                format!("only one {ident} block is allowed here"),
            ));
        }
        if let Some(b) = first {
            self.no_labels(b, ident)?;
        }
        Ok(first)
    }

    /// A block body as JSON (a driver's `config`): nested blocks become
    /// lists of objects, as Nomad decodes them.
    fn body_json(&self, body: &Body) -> Result<Map<String, Json>> {
        let mut out = Map::new();
        for structure in body.iter() {
            match structure {
                Structure::Attribute(attr) => {
                    let value = serde_json::to_value(self.attr_value(attr)?).map_err(|e| {
                        self.error(attr.value.span(), format!("cannot encode value: {e}"))
                    })?;
                    out.insert(attr.key.as_str().to_string(), value);
                }
                Structure::Block(block) => {
                    let inner = Json::Object(self.body_json(&block.body)?);
                    let entry = out
                        .entry(block.ident.as_str().to_string())
                        .or_insert_with(|| Json::Array(Vec::new()));
                    match entry {
                        Json::Array(items) => items.push(inner),
                        _ => {
                            return Err(self.error(
                                block.span(),
                                format!("{} is both an argument and a block", block.ident.as_str()),
                            ))
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    // ---- blocks ----

    fn job(&self, block: &Block) -> Result<Job> {
        let id = self.one_label(block, "job")?;
        let b = &block.body;
        self.check(
            b,
            &[
                "name",
                "region",
                "namespace",
                "type",
                "priority",
                "all_at_once",
                "datacenters",
                "node_pool",
                "meta",
            ],
            &[
                "group",
                "constraint",
                "affinity",
                "spread",
                "update",
                "multiregion",
                "periodic",
                "parameterized",
                "meta",
                "reschedule",
                "migrate",
            ],
            Some("job"),
        )?;
        let mut job = Job {
            id: id.clone(),
            name: self.string(b, "name")?.unwrap_or(id),
            region: self.string(b, "region")?.unwrap_or_default(),
            namespace: self.string(b, "namespace")?.unwrap_or_default(),
            r#type: self.string(b, "type")?.unwrap_or_default(),
            priority: self.int(b, "priority")?.unwrap_or_default(),
            all_at_once: self.bool(b, "all_at_once")?.unwrap_or_default(),
            datacenters: self.strings(b, "datacenters")?.unwrap_or_default(),
            node_pool: self.string(b, "node_pool")?.unwrap_or_default(),
            meta: self.string_map(b, "meta")?,
            ..Job::default()
        };
        (job.constraints, job.affinities, job.spreads) = self.placement(b)?;
        job.update = self
            .single(b, "update")?
            .map(|u| self.update(u))
            .transpose()?;
        job.multiregion = self
            .single(b, "multiregion")?
            .map(|m| self.multiregion(m))
            .transpose()?;
        job.periodic = self
            .single(b, "periodic")?
            .map(|p| self.periodic(p))
            .transpose()?;
        job.parameterized_job = self
            .single(b, "parameterized")?
            .map(|p| self.parameterized(p))
            .transpose()?;
        let reschedule = self
            .single(b, "reschedule")?
            .map(|r| self.reschedule(r))
            .transpose()?;
        let migrate = self
            .single(b, "migrate")?
            .map(|m| self.migrate(m))
            .transpose()?;
        let mut names = BTreeSet::new();
        for group in b.get_blocks("group") {
            let mut g = self.group(group)?;
            if !names.insert(g.name.clone()) {
                return Err(self.error(
                    group.span(),
                    format!("a group named {:?} is already defined", g.name),
                ));
            }
            if g.reschedule_policy.is_none() {
                g.reschedule_policy.clone_from(&reschedule);
            }
            if g.migrate.is_none() {
                g.migrate.clone_from(&migrate);
            }
            job.task_groups.push(g);
        }
        Ok(job)
    }

    fn placement(&self, b: &Body) -> Result<(Vec<Constraint>, Vec<Affinity>, Vec<Spread>)> {
        let constraints = b
            .get_blocks("constraint")
            .map(|c| self.constraint(c))
            .collect::<Result<_>>()?;
        let affinities = b
            .get_blocks("affinity")
            .map(|a| self.affinity(a))
            .collect::<Result<_>>()?;
        let spreads = b
            .get_blocks("spread")
            .map(|s| self.spread(s))
            .collect::<Result<_>>()?;
        Ok((constraints, affinities, spreads))
    }

    fn constraint(&self, block: &Block) -> Result<Constraint> {
        self.no_labels(block, "constraint")?;
        let b = &block.body;
        // Nomad's shorthands: `version = ">= 1.2"` means operator "version".
        const SHORTHANDS: &[&str] = &[
            "version",
            "semver",
            "regexp",
            "set_contains",
            "set_contains_any",
            "set_contains_all",
            "distinct_property",
        ];
        let mut attrs = vec!["attribute", "operator", "value", "distinct_hosts"];
        attrs.extend_from_slice(SHORTHANDS);
        self.check(b, &attrs, &[], Some("constraint"))?;
        let mut c = Constraint {
            l_target: self.string(b, "attribute")?.unwrap_or_default(),
            operand: self.string(b, "operator")?.unwrap_or_default(),
            r_target: self.string(b, "value")?.unwrap_or_default(),
        };
        for key in SHORTHANDS {
            if let Some(v) = self.string(b, key)? {
                c.operand = (*key).to_string();
                c.r_target = v;
            }
        }
        if let Some(true) = self.bool(b, "distinct_hosts")? {
            c.operand = "distinct_hosts".to_string();
        }
        Ok(c)
    }

    fn affinity(&self, block: &Block) -> Result<Affinity> {
        self.no_labels(block, "affinity")?;
        let b = &block.body;
        self.check(
            b,
            &["attribute", "operator", "value", "weight"],
            &[],
            Some("affinity"),
        )?;
        let weight = self.int(b, "weight")?.unwrap_or_default();
        Ok(Affinity {
            l_target: self.string(b, "attribute")?.unwrap_or_default(),
            operand: self.string(b, "operator")?.unwrap_or_default(),
            r_target: self.string(b, "value")?.unwrap_or_default(),
            weight: i32::try_from(weight).map_err(|_| {
                self.error(
                    b.get_attribute("weight").and_then(|a| a.value.span()),
                    "weight is out of range",
                )
            })?,
        })
    }

    fn spread(&self, block: &Block) -> Result<Spread> {
        self.no_labels(block, "spread")?;
        let b = &block.body;
        self.check(b, &["attribute", "weight"], &["target"], Some("spread"))?;
        let mut targets = Vec::new();
        for t in b.get_blocks("target") {
            let value = self.one_label(t, "target")?;
            self.check(&t.body, &["percent", "value"], &[], Some("target"))?;
            let percent = self.int(&t.body, "percent")?.unwrap_or_default();
            targets.push(SpreadTarget {
                value: self.string(&t.body, "value")?.unwrap_or(value),
                percent: u32::try_from(percent)
                    .map_err(|_| self.error(t.span(), "percent must be between 0 and 100"))?,
            });
        }
        let weight = self.int(b, "weight")?.unwrap_or_default();
        Ok(Spread {
            attribute: self.string(b, "attribute")?.unwrap_or_default(),
            weight: i32::try_from(weight)
                .map_err(|_| self.error(block.span(), "weight is out of range"))?,
            spread_target: targets,
        })
    }

    fn update(&self, block: &Block) -> Result<UpdateStrategy> {
        let b = &block.body;
        self.check(
            b,
            &[
                "stagger",
                "max_parallel",
                "health_check",
                "min_healthy_time",
                "healthy_deadline",
                "progress_deadline",
                "auto_revert",
                "auto_promote",
                "canary",
            ],
            &[],
            Some("update"),
        )?;
        Ok(UpdateStrategy {
            stagger: self.duration(b, "stagger")?.unwrap_or_default(),
            max_parallel: self.int(b, "max_parallel")?.unwrap_or_default(),
            health_check: self.string(b, "health_check")?.unwrap_or_default(),
            min_healthy_time: self.duration(b, "min_healthy_time")?.unwrap_or_default(),
            healthy_deadline: self.duration(b, "healthy_deadline")?.unwrap_or_default(),
            progress_deadline: self.duration(b, "progress_deadline")?,
            auto_revert: self.bool(b, "auto_revert")?.unwrap_or_default(),
            auto_promote: self.bool(b, "auto_promote")?.unwrap_or_default(),
            canary: self.int(b, "canary")?.unwrap_or_default(),
        })
    }

    fn restart(&self, block: &Block) -> Result<RestartPolicy> {
        let b = &block.body;
        self.check(
            b,
            &["attempts", "interval", "delay", "mode", "render_templates"],
            &[],
            Some("restart"),
        )?;
        Ok(RestartPolicy {
            attempts: self.int(b, "attempts")?.unwrap_or_default(),
            interval: self.duration(b, "interval")?.unwrap_or_default(),
            delay: self.duration(b, "delay")?.unwrap_or_default(),
            mode: self.string(b, "mode")?.unwrap_or_default(),
            render_templates: self.bool(b, "render_templates")?.unwrap_or_default(),
        })
    }

    fn reschedule(&self, block: &Block) -> Result<ReschedulePolicy> {
        let b = &block.body;
        self.check(
            b,
            &[
                "attempts",
                "interval",
                "delay",
                "delay_function",
                "max_delay",
                "unlimited",
            ],
            &[],
            Some("reschedule"),
        )?;
        Ok(ReschedulePolicy {
            attempts: self.int(b, "attempts")?.unwrap_or_default(),
            interval: self.duration(b, "interval")?.unwrap_or_default(),
            delay: self.duration(b, "delay")?.unwrap_or_default(),
            delay_function: self.string(b, "delay_function")?.unwrap_or_default(),
            max_delay: self.duration(b, "max_delay")?.unwrap_or_default(),
            unlimited: self.bool(b, "unlimited")?.unwrap_or_default(),
        })
    }

    fn migrate(&self, block: &Block) -> Result<MigrateStrategy> {
        let b = &block.body;
        self.check(
            b,
            &[
                "max_parallel",
                "health_check",
                "min_healthy_time",
                "healthy_deadline",
            ],
            &[],
            Some("migrate"),
        )?;
        Ok(MigrateStrategy {
            max_parallel: self.int(b, "max_parallel")?.unwrap_or_default(),
            health_check: self.string(b, "health_check")?.unwrap_or_default(),
            min_healthy_time: self.duration(b, "min_healthy_time")?.unwrap_or_default(),
            healthy_deadline: self.duration(b, "healthy_deadline")?.unwrap_or_default(),
        })
    }

    fn multiregion(&self, block: &Block) -> Result<Multiregion> {
        let b = &block.body;
        self.check(b, &[], &["strategy", "region"], Some("multiregion"))?;
        let strategy = match self.single(b, "strategy")? {
            Some(s) => {
                self.check(
                    &s.body,
                    &["max_parallel", "on_failure"],
                    &[],
                    Some("strategy"),
                )?;
                MultiregionStrategy {
                    max_parallel: self.int(&s.body, "max_parallel")?.unwrap_or_default(),
                    on_failure: self.string(&s.body, "on_failure")?.unwrap_or_default(),
                }
            }
            None => MultiregionStrategy::default(),
        };
        let mut regions = Vec::new();
        for r in b.get_blocks("region") {
            let name = self.one_label(r, "region")?;
            let rb = &r.body;
            self.check(
                rb,
                &["count", "datacenters", "node_pool", "meta"],
                &["meta"],
                Some("region"),
            )?;
            if regions.iter().any(|x: &MultiregionRegion| x.name == name) {
                return Err(self.error(r.span(), format!("region {name:?} is listed twice")));
            }
            regions.push(MultiregionRegion {
                name,
                count: self.int(rb, "count")?.unwrap_or_default(),
                datacenters: self.strings(rb, "datacenters")?.unwrap_or_default(),
                node_pool: self.string(rb, "node_pool")?.unwrap_or_default(),
                meta: self.string_map(rb, "meta")?,
            });
        }
        Ok(Multiregion { strategy, regions })
    }

    fn periodic(&self, block: &Block) -> Result<crate::model::PeriodicConfig> {
        let b = &block.body;
        self.check(
            b,
            &["cron", "crons", "prohibit_overlap", "time_zone", "enabled"],
            &[],
            Some("periodic"),
        )?;
        let cron = self.string(b, "cron")?;
        let crons = self.strings(b, "crons")?.unwrap_or_default();
        if cron.is_none() && crons.is_empty() {
            return Err(self.error(
                block.span(),
                "a periodic block needs `crons = [\"...\"]` (or `cron = \"...\"`)",
            ));
        }
        if crons.len() > 1 || (cron.is_some() && !crons.is_empty()) {
            return Err(self.error(
                b.get_attribute("crons").and_then(|a| a.value.span()),
                "only one cron spec per periodic block is supported",
            ));
        }
        Ok(crate::model::PeriodicConfig {
            enabled: self.bool(b, "enabled")?.unwrap_or(true),
            spec: cron.or_else(|| crons.first().cloned()).unwrap_or_default(),
            spec_type: "cron".to_string(),
            prohibit_overlap: self.bool(b, "prohibit_overlap")?.unwrap_or(false),
            time_zone: self
                .string(b, "time_zone")?
                .unwrap_or_else(|| "UTC".to_string()),
        })
    }

    fn parameterized(&self, block: &Block) -> Result<crate::model::ParameterizedJobConfig> {
        let b = &block.body;
        self.check(
            b,
            &["payload", "meta_required", "meta_optional"],
            &[],
            Some("parameterized"),
        )?;
        let payload = self
            .string(b, "payload")?
            .unwrap_or_else(|| "optional".to_string());
        if !["optional", "required", "forbidden"].contains(&payload.as_str()) {
            return Err(self.error(
                b.get_attribute("payload").and_then(|a| a.value.span()),
                "payload must be \"optional\", \"required\" or \"forbidden\"",
            ));
        }
        Ok(crate::model::ParameterizedJobConfig {
            payload,
            meta_required: self.strings(b, "meta_required")?.unwrap_or_default(),
            meta_optional: self.strings(b, "meta_optional")?.unwrap_or_default(),
        })
    }

    fn group(&self, block: &Block) -> Result<TaskGroup> {
        let name = self.one_label(block, "group")?;
        let b = &block.body;
        self.check(
            b,
            &[
                "count",
                "meta",
                "shutdown_delay",
                "stop_after_client_disconnect",
                "max_client_disconnect",
            ],
            &[
                "task",
                "constraint",
                "affinity",
                "spread",
                "restart",
                "reschedule",
                "ephemeral_disk",
                "update",
                "migrate",
                "network",
                "meta",
            ],
            Some("group"),
        )?;
        let mut g = TaskGroup {
            name,
            count: self.int(b, "count")?.unwrap_or(1),
            meta: self.string_map(b, "meta")?,
            shutdown_delay: self.duration(b, "shutdown_delay")?,
            stop_after_client_disconnect: self.duration(b, "stop_after_client_disconnect")?,
            max_client_disconnect: self.duration(b, "max_client_disconnect")?,
            ..TaskGroup::default()
        };
        (g.constraints, g.affinities, g.spreads) = self.placement(b)?;
        g.restart_policy = self
            .single(b, "restart")?
            .map(|r| self.restart(r))
            .transpose()?;
        g.reschedule_policy = self
            .single(b, "reschedule")?
            .map(|r| self.reschedule(r))
            .transpose()?;
        g.update = self
            .single(b, "update")?
            .map(|u| self.update(u))
            .transpose()?;
        g.migrate = self
            .single(b, "migrate")?
            .map(|m| self.migrate(m))
            .transpose()?;
        if let Some(d) = self.single(b, "ephemeral_disk")? {
            self.check(
                &d.body,
                &["size", "sticky", "migrate"],
                &[],
                Some("ephemeral_disk"),
            )?;
            g.ephemeral_disk = EphemeralDisk {
                size_mb: self.int(&d.body, "size")?.unwrap_or_default(),
                sticky: self.bool(&d.body, "sticky")?.unwrap_or_default(),
                migrate: self.bool(&d.body, "migrate")?.unwrap_or_default(),
            };
        }
        if let Some(n) = self.single(b, "network")? {
            g.networks.push(self.network(n)?);
        }
        let mut names = BTreeSet::new();
        for t in b.get_blocks("task") {
            let task = self.task(t)?;
            if !names.insert(task.name.clone()) {
                return Err(self.error(
                    t.span(),
                    format!(
                        "a task named {:?} is already defined in this group",
                        task.name
                    ),
                ));
            }
            g.tasks.push(task);
        }
        Ok(g)
    }

    fn network(&self, block: &Block) -> Result<NetworkResource> {
        let b = &block.body;
        self.check(
            b,
            &["mode", "hostname", "mbits"],
            &["port"],
            Some("network"),
        )?;
        let mut n = NetworkResource {
            mode: self.string(b, "mode")?.unwrap_or_default(),
            hostname: self.string(b, "hostname")?.unwrap_or_default(),
            mbits: self.int(b, "mbits")?.unwrap_or_default(),
            ..NetworkResource::default()
        };
        for p in b.get_blocks("port") {
            let label = self.one_label(p, "port")?;
            self.check(
                &p.body,
                &["static", "to", "host_network"],
                &[],
                Some("port"),
            )?;
            let static_port = self.int(&p.body, "static")?;
            let port = Port {
                label,
                value: static_port.unwrap_or_default(),
                to: self.int(&p.body, "to")?.unwrap_or_default(),
                host_network: self.string(&p.body, "host_network")?.unwrap_or_default(),
            };
            if static_port.is_some() {
                n.reserved_ports.push(port);
            } else {
                n.dynamic_ports.push(port);
            }
        }
        Ok(n)
    }

    fn task(&self, block: &Block) -> Result<Task> {
        let name = self.one_label(block, "task")?;
        let b = &block.body;
        self.check(
            b,
            &[
                "driver",
                "user",
                "config",
                "env",
                "meta",
                "kill_timeout",
                "kill_signal",
                "leader",
                "shutdown_delay",
                "kind",
            ],
            &[
                "config",
                "env",
                "meta",
                "resources",
                "constraint",
                "affinity",
                "restart",
                "logs",
                "lifecycle",
                "dispatch_payload",
            ],
            Some("task"),
        )?;
        let Some(driver) = self.string(b, "driver")? else {
            return Err(self.error(
                block.span(),
                format!("task {name:?} needs a driver, e.g. driver = \"raw_exec\""),
            ));
        };
        let mut t = Task {
            name,
            driver,
            user: self.string(b, "user")?.unwrap_or_default(),
            env: self.string_map(b, "env")?,
            meta: self.string_map(b, "meta")?,
            kill_timeout: self.duration(b, "kill_timeout")?.unwrap_or_default(),
            kill_signal: self.string(b, "kill_signal")?.unwrap_or_default(),
            leader: self.bool(b, "leader")?.unwrap_or_default(),
            shutdown_delay: self.duration(b, "shutdown_delay")?.unwrap_or_default(),
            kind: self.string(b, "kind")?.unwrap_or_default(),
            ..Task::default()
        };
        if let Some(attr) = b.get_attribute("config") {
            match serde_json::to_value(self.attr_value(attr)?) {
                Ok(Json::Object(o)) => t.config = o,
                _ => return Err(self.error(attr.value.span(), "config must be a map")),
            }
        }
        if let Some(c) = self.single(b, "config")? {
            t.config.extend(self.body_json(&c.body)?);
        }
        (t.constraints, t.affinities, _) = self.placement(b)?;
        t.restart_policy = self
            .single(b, "restart")?
            .map(|r| self.restart(r))
            .transpose()?;
        if let Some(r) = self.single(b, "resources")? {
            t.resources = self.resources(r)?;
        }
        if let Some(l) = self.single(b, "logs")? {
            self.check(
                &l.body,
                &["max_files", "max_file_size", "disabled", "enabled"],
                &[],
                Some("logs"),
            )?;
            let disabled = match self.bool(&l.body, "enabled")? {
                Some(enabled) => !enabled,
                None => self.bool(&l.body, "disabled")?.unwrap_or_default(),
            };
            t.log_config = LogConfig {
                max_files: self.int(&l.body, "max_files")?.unwrap_or_default(),
                max_file_size_mb: self.int(&l.body, "max_file_size")?.unwrap_or_default(),
                disabled,
            };
        }
        if let Some(l) = self.single(b, "lifecycle")? {
            self.check(&l.body, &["hook", "sidecar"], &[], Some("lifecycle"))?;
            t.lifecycle = Some(TaskLifecycle {
                hook: self.string(&l.body, "hook")?.unwrap_or_default(),
                sidecar: self.bool(&l.body, "sidecar")?.unwrap_or_default(),
            });
        }
        if let Some(d) = self.single(b, "dispatch_payload")? {
            self.check(&d.body, &["file"], &[], Some("dispatch_payload"))?;
            t.dispatch_payload = Some(crate::model::DispatchPayloadConfig {
                file: self.string(&d.body, "file")?.unwrap_or_default(),
            });
        }
        Ok(t)
    }

    fn resources(&self, block: &Block) -> Result<Resources> {
        let b = &block.body;
        self.check(
            b,
            &["cpu", "cores", "memory", "memory_max", "disk"],
            &["network"],
            Some("resources"),
        )?;
        let mut r = Resources {
            cpu: self.int(b, "cpu")?.unwrap_or_default(),
            cores: self.int(b, "cores")?.unwrap_or_default(),
            memory_mb: self.int(b, "memory")?.unwrap_or_default(),
            memory_max_mb: self.int(b, "memory_max")?.unwrap_or_default(),
            disk_mb: self.int(b, "disk")?.unwrap_or_default(),
            ..Resources::default()
        };
        if let Some(n) = self.single(b, "network")? {
            r.networks.push(self.network(n)?);
        }
        Ok(r)
    }
}

/// The name of a variable's `type` (`string`, `number`, `list(string)` ...).
fn type_name(expr: &Expression) -> Option<String> {
    match expr {
        Expression::Variable(v) => {
            let name = v.as_str();
            ["string", "number", "bool", "any"]
                .contains(&name)
                .then(|| name.to_string())
        }
        Expression::FuncCall(call) => {
            let name = call.name.name.as_str();
            ["list", "set", "map", "object", "tuple"]
                .contains(&name)
                .then(|| name.to_string())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
