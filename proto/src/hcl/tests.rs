use std::collections::BTreeMap;

use serde_json::json;

use super::{parse_duration, parse_job, parse_var_file, HclError};
use crate::model::{Job, SECOND};

const EXAMPLE: &str = include_str!("../../../ops/deploy/jobs/example.hcl");
const BATCH: &str = include_str!("../../../ops/deploy/jobs/batch.hcl");

fn no_vars() -> BTreeMap<String, String> {
    BTreeMap::new()
}

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn parse(src: &str) -> Job {
    match parse_job(src, &no_vars()) {
        Ok(job) => job,
        Err(e) => panic!("parse failed: {e}\n{src}"),
    }
}

fn parse_err(src: &str) -> HclError {
    match parse_job(src, &no_vars()) {
        Ok(job) => panic!("expected an error, got {job:?}"),
        Err(e) => e,
    }
}

#[test]
fn example_web_job() {
    let job = parse(EXAMPLE);
    assert_eq!(job.id, "web");
    assert_eq!(job.name, "web");
    assert_eq!(job.r#type, "service");
    assert_eq!(job.priority, 60);
    assert_eq!(job.datacenters, vec!["dc1"]);
    assert_eq!(job.meta["owner"], "platform");
    let mr = job.multiregion.as_ref().expect("multiregion");
    assert_eq!(mr.strategy.max_parallel, 1);
    assert_eq!(mr.strategy.on_failure, "fail_all");
    let regions: Vec<_> = mr
        .regions
        .iter()
        .map(|r| (r.name.as_str(), r.count))
        .collect();
    assert_eq!(regions, vec![("eu", 2), ("us", 1)]);
    assert_eq!(mr.regions[0].datacenters, vec!["dc1"]);
    assert_eq!(job.constraints[0].l_target, "${attr.kernel.name}");
    assert_eq!(job.constraints[0].r_target, "linux");
    let update = job.update.as_ref().expect("update");
    assert_eq!(update.min_healthy_time, 5 * SECOND);
    assert_eq!(update.healthy_deadline, 120 * SECOND);
    assert_eq!(update.progress_deadline, Some(300 * SECOND));
    assert!(update.auto_revert);

    let group = &job.task_groups[0];
    assert_eq!(group.name, "web");
    assert_eq!(group.count, 1);
    assert_eq!(group.spreads[0].attribute, "${node.datacenter}");
    assert_eq!(group.spreads[0].weight, 50);
    let restart = group.restart_policy.as_ref().expect("restart");
    assert_eq!(
        (
            restart.attempts,
            restart.interval,
            restart.delay,
            restart.mode.as_str()
        ),
        (3, 600 * SECOND, 15 * SECOND, "delay")
    );
    let resched = group.reschedule_policy.as_ref().expect("reschedule");
    assert!(resched.unlimited);
    assert_eq!(resched.delay_function, "exponential");
    assert_eq!(resched.max_delay, 600 * SECOND);
    assert_eq!(group.networks[0].dynamic_ports[0].label, "http");

    let task = &group.tasks[0];
    assert_eq!(task.name, "hello");
    assert_eq!(task.driver, "raw_exec");
    assert_eq!(task.config["command"], json!("/bin/sh"));
    assert_eq!(
        task.config["args"],
        json!([
            "-c",
            "while true; do echo hello from $NOMAD_ALLOC_ID; sleep 1; done"
        ])
    );
    assert_eq!(task.env["GREETING"], "hello");
    assert_eq!(task.resources.cpu, 100);
    assert_eq!(task.resources.memory_mb, 64);
    assert_eq!(task.kill_timeout, 10 * SECOND);
    assert_eq!(task.log_config.max_files, 3);
    assert_eq!(task.log_config.max_file_size_mb, 5);

    // The result is a valid job once canonicalized.
    let mut canonical = job.clone();
    canonical.canonicalize();
    if let Err(e) = canonical.validate() {
        panic!("example job does not validate: {e}");
    }
}

#[test]
fn example_with_variables() {
    let job = parse_job(
        EXAMPLE,
        &vars(&[("greeting", "hi"), ("datacenters", "[\"a\", \"b\"]")]),
    )
    .expect("parse");
    assert_eq!(job.datacenters, vec!["a", "b"]);
    let task = &job.task_groups[0].tasks[0];
    assert_eq!(task.env["GREETING"], "hi");
    assert!(task.config["args"][1]
        .as_str()
        .is_some_and(|s| s.starts_with("while true; do echo hi from")));
}

#[test]
fn batch_example_and_number_variables() {
    let job = parse(BATCH);
    assert_eq!(job.r#type, "batch");
    assert_eq!(job.task_groups[0].count, 3);
    let job = parse_job(BATCH, &vars(&[("runs", "5")])).expect("parse");
    assert_eq!(job.task_groups[0].count, 5);
    let args = &job.task_groups[0].tasks[0].config["args"];
    assert_eq!(
        args[1],
        json!("seq 1 1000 | awk '{s+=$1} END {print \"sum\", s}'")
    );
    let e = parse_job(BATCH, &vars(&[("runs", "many")])).expect_err("not a number");
    assert!(e.message.contains("runs"), "{e}");
    assert_eq!(e.line, 4, "{e}");
}

#[test]
fn unknown_and_missing_variables_are_errors() {
    let e = parse_job(BATCH, &vars(&[("nope", "1")])).expect_err("undeclared");
    assert!(e.message.contains("\"nope\""), "{e}");
    let src = "variable \"x\" {}\njob \"j\" {\n  name = var.x\n}\n";
    let e = parse_err(src);
    assert_eq!((e.line, e.column), (1, 1), "{e}");
    assert!(e.message.contains("-var x="), "{e}");
    let job = parse_job(src, &vars(&[("x", "named")])).expect("given");
    assert_eq!(job.name, "named");
}

#[test]
fn locals_and_expressions() {
    let job = parse(
        r#"
variable "n" {
  type    = number
  default = 2
}
locals {
  total = var.n * 3
  label = "web-${var.n}"
}
job "j" {
  meta = { label = local.label, total = local.total }
  group "g" {
    count = local.total
    task "t" {
      driver = "mock_driver"
      config = { run_for = "1s", exit_code = 0 }
    }
  }
}
"#,
    );
    assert_eq!(job.meta["label"], "web-2");
    assert_eq!(job.meta["total"], "6");
    assert_eq!(job.task_groups[0].count, 6);
    assert_eq!(job.task_groups[0].tasks[0].config["exit_code"], json!(0));
}

#[test]
fn runtime_interpolations_stay_verbatim() {
    let job = parse(
        r#"
job "j" {
  group "g" {
    task "t" {
      driver = "raw_exec"
      env {
        NAME = "${NOMAD_TASK_NAME}-${meta.rack}"
        LIT  = "$${var.kept}"
      }
      constraint {
        attribute = "${meta.rack}"
        operator  = "regexp"
        value     = "r[0-9]+"
      }
    }
  }
}
"#,
    );
    let task = &job.task_groups[0].tasks[0];
    assert_eq!(task.env["NAME"], "${NOMAD_TASK_NAME}-${meta.rack}");
    assert_eq!(task.env["LIT"], "${var.kept}");
    assert_eq!(task.constraints[0].operand, "regexp");
}

#[test]
fn placement_blocks() {
    let job = parse(
        r#"
job "j" {
  constraint {
    distinct_hosts = true
  }
  constraint {
    attribute = "${attr.os.version}"
    version   = ">= 1.2"
  }
  affinity {
    attribute = "${node.datacenter}"
    value     = "dc2"
    weight    = -50
  }
  spread {
    attribute = "${node.datacenter}"
    weight    = 100
    target "dc1" {
      percent = 70
    }
    target "dc2" {
      percent = 30
    }
  }
  group "g" {
    task "t" {
      driver = "raw_exec"
      affinity {
        attribute = "${attr.cpu.arch}"
        operator  = "="
        value     = "amd64"
        weight    = 25
      }
    }
  }
}
"#,
    );
    assert_eq!(job.constraints[0].operand, "distinct_hosts");
    assert_eq!(job.constraints[1].operand, "version");
    assert_eq!(job.constraints[1].r_target, ">= 1.2");
    assert_eq!(job.affinities[0].weight, -50);
    let targets: Vec<_> = job.spreads[0]
        .spread_target
        .iter()
        .map(|t| (t.value.as_str(), t.percent))
        .collect();
    assert_eq!(targets, vec![("dc1", 70), ("dc2", 30)]);
    assert_eq!(job.task_groups[0].tasks[0].affinities[0].weight, 25);
}

#[test]
fn periodic_parameterized_dispatch_payload() {
    let job = parse(
        r#"
job "cron" {
  type = "batch"
  periodic {
    crons            = ["*/5 * * * *"]
    prohibit_overlap = true
    time_zone        = "Europe/Paris"
  }
  group "g" {
    task "t" {
      driver = "raw_exec"
    }
  }
}
"#,
    );
    assert_eq!(
        job.periodic.map(|p| serde_json::to_value(p).unwrap()),
        Some(json!({
            "Enabled": true,
            "Spec": "*/5 * * * *",
            "SpecType": "cron",
            "ProhibitOverlap": true,
            "TimeZone": "Europe/Paris",
        }))
    );
    let job = parse(
        r#"
job "tmpl" {
  type = "batch"
  parameterized {
    payload       = "required"
    meta_required = ["customer"]
  }
  group "g" {
    task "t" {
      driver = "raw_exec"
      dispatch_payload {
        file = "input.json"
      }
    }
  }
}
"#,
    );
    assert_eq!(
        job.parameterized_job
            .map(|p| serde_json::to_value(p).unwrap()),
        Some(json!({"Payload": "required", "MetaRequired": ["customer"], "MetaOptional": []}))
    );
    assert_eq!(
        job.task_groups[0].tasks[0]
            .dispatch_payload
            .as_ref()
            .map(|p| p.file.as_str()),
        Some("input.json")
    );
    let e = parse_err("job \"p\" {\n  periodic {\n    prohibit_overlap = true\n  }\n}\n");
    assert_eq!((e.line, e.column), (2, 3), "{e}");
}

#[test]
fn group_blocks() {
    let job = parse(
        r#"
job "j" {
  migrate {
    max_parallel = 2
  }
  group "g" {
    count                 = 0
    shutdown_delay        = "5s"
    max_client_disconnect = "1h"
    ephemeral_disk {
      size   = 500
      sticky = true
    }
    update {
      canary       = 1
      auto_promote = true
      stagger      = "1m30s"
    }
    network {
      mode = "bridge"
      port "db" {
        static = 5432
        to     = 5432
      }
      port "http" {
        to = 8080
      }
    }
    task "t" {
      driver = "raw_exec"
      user   = "nobody"
      leader = true
      lifecycle {
        hook    = "prestart"
        sidecar = true
      }
      resources {
        cores      = 2
        memory     = 256
        memory_max = 512
      }
      restart {
        attempts = 0
      }
    }
  }
}
"#,
    );
    let g = &job.task_groups[0];
    assert_eq!(g.count, 0, "an explicit zero count is kept");
    assert_eq!(g.shutdown_delay, Some(5 * SECOND));
    assert_eq!(g.max_client_disconnect, Some(3600 * SECOND));
    assert_eq!(
        (g.ephemeral_disk.size_mb, g.ephemeral_disk.sticky),
        (500, true)
    );
    let u = g.update.as_ref().expect("update");
    assert_eq!(
        (u.canary, u.auto_promote, u.stagger),
        (1, true, 90 * SECOND)
    );
    assert_eq!(g.migrate.as_ref().map(|m| m.max_parallel), Some(2));
    let n = &g.networks[0];
    assert_eq!(n.mode, "bridge");
    assert_eq!(
        (
            n.reserved_ports[0].label.as_str(),
            n.reserved_ports[0].value
        ),
        ("db", 5432)
    );
    assert_eq!(
        (n.dynamic_ports[0].label.as_str(), n.dynamic_ports[0].to),
        ("http", 8080)
    );
    let t = &g.tasks[0];
    assert_eq!(t.user, "nobody");
    assert!(t.leader);
    assert_eq!(
        t.lifecycle.as_ref().map(|l| l.hook.as_str()),
        Some("prestart")
    );
    assert_eq!((t.resources.cores, t.resources.memory_max_mb), (2, 512));
    assert_eq!(t.restart_policy.as_ref().map(|r| r.attempts), Some(0));
}

#[test]
fn config_blocks_become_lists_of_objects() {
    let job = parse(
        r#"
job "j" {
  group "g" {
    task "t" {
      driver = "docker"
      config {
        image = "redis:7"
        ports = ["db"]
        mount {
          type   = "bind"
          source = "/tmp"
        }
        mount {
          type = "tmpfs"
        }
        labels = {
          "com.example" = "x"
        }
      }
    }
  }
}
"#,
    );
    let config = &job.task_groups[0].tasks[0].config;
    assert_eq!(config["image"], json!("redis:7"));
    assert_eq!(
        config["mount"],
        json!([{"type": "bind", "source": "/tmp"}, {"type": "tmpfs"}])
    );
    assert_eq!(config["labels"]["com.example"], json!("x"));
}

#[test]
fn errors_name_line_and_column() {
    // Syntax error.
    let e = parse_err("job \"j\" {\n  group \"g\" {\n    count = \n  }\n}\n");
    assert_eq!(e.line, 3, "{e}");
    // Unknown argument.
    let e = parse_err("job \"j\" {\n  group \"g\" {\n    cuont = 2\n  }\n}\n");
    assert_eq!((e.line, e.column), (3, 5), "{e}");
    assert!(e.message.contains("\"cuont\""), "{e}");
    // Unknown block.
    let e = parse_err("job \"j\" {\n  grp \"g\" {\n  }\n}\n");
    assert_eq!((e.line, e.column), (2, 3), "{e}");
    // Unsupported Nomad block.
    let e = parse_err("job \"j\" {\n  group \"g\" {\n    service {\n    }\n  }\n}\n");
    assert_eq!((e.line, e.column), (3, 5), "{e}");
    assert!(e.message.contains("does not support \"service\""), "{e}");
    // Bad duration: points at the value.
    let e = parse_err(
        "job \"j\" {\n  group \"g\" {\n    restart {\n      delay = \"15 seconds\"\n    }\n  }\n}\n",
    );
    assert_eq!((e.line, e.column), (4, 15), "{e}");
    assert!(e.message.contains("delay"), "{e}");
    // Wrong type.
    let e = parse_err("job \"j\" {\n  priority = \"high\"\n}\n");
    assert_eq!((e.line, e.column), (2, 14), "{e}");
    // Unknown variable.
    let e = parse_err("job \"j\" {\n  name = var.missing\n}\n");
    assert_eq!((e.line, e.column), (2, 10), "{e}");
    // Task without a driver.
    let e = parse_err("job \"j\" {\n  group \"g\" {\n    task \"t\" {\n    }\n  }\n}\n");
    assert_eq!((e.line, e.column), (3, 5), "{e}");
    // Missing or repeated job.
    assert!(parse_err("variable \"x\" {\n  default = 1\n}\n")
        .message
        .contains("no job block"));
    let e = parse_err("job \"a\" {}\njob \"b\" {}\n");
    assert_eq!(e.line, 2, "{e}");
    // Duplicate group.
    let e = parse_err("job \"j\" {\n  group \"g\" {}\n  group \"g\" {}\n}\n");
    assert_eq!(e.line, 3, "{e}");
    // Display names the position.
    assert!(e.to_string().starts_with("line 3, column 3: "), "{e}");
}

#[test]
fn durations_parse_like_go() {
    assert_eq!(parse_duration("0"), Ok(0));
    assert_eq!(parse_duration("30s"), Ok(30 * SECOND));
    assert_eq!(parse_duration("1h30m"), Ok(5400 * SECOND));
    assert_eq!(parse_duration("1.5s"), Ok(1_500_000_000));
    assert_eq!(parse_duration("250ms"), Ok(250_000_000));
    assert_eq!(parse_duration("10us"), Ok(10_000));
    assert_eq!(parse_duration("-2m"), Ok(-120 * SECOND));
    assert!(parse_duration("").is_err());
    assert!(parse_duration("10").is_err());
    assert!(parse_duration("5 s").is_err());
    assert!(parse_duration("3d").is_err());
}

#[test]
fn var_files() {
    let vars = parse_var_file("greeting = \"hey\"\ndatacenters = [\"x\"]\n").expect("parse");
    assert_eq!(vars["greeting"], "hey");
    let job = parse_job(EXAMPLE, &vars).expect("job");
    assert_eq!(job.datacenters, vec!["x"]);
    let e = parse_var_file("a = 1\nb {\n}\n").expect_err("block");
    assert_eq!(e.line, 2);
}

#[test]
fn variable_validation() {
    let src = r#"
variable "count" {
  type    = number
  default = 2
  validation {
    condition     = var.count > 0 && var.count < 10
    error_message = "count must be between 1 and 9"
  }
}
job "j" {
  group "g" {
    count = var.count
  }
}
"#;
    assert_eq!(parse(src).task_groups[0].count, 2);
    let ok = parse_job(src, &vars(&[("count", "9")])).expect("valid");
    assert_eq!(ok.task_groups[0].count, 9);
    let e = parse_job(src, &vars(&[("count", "12")])).expect_err("invalid");
    assert_eq!((e.line, e.column), (2, 1), "{e}");
    assert!(e.message.contains("count must be between 1 and 9"), "{e}");
}
